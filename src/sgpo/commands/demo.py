"""`sgpo demo`: the strategy world end to end — warm-up, GRPO vs SGPO at equal budgets, evaluation.

Writes DIR/results.json, DIR/per_family.json, DIR/plots/*.png, DIR/{grpo,sgpo}/report/index.html and
prints the held-out accuracy table. A rerun of the same configuration resumes where an interrupted one stopped; a folder
holding anything else is refused unless --overwrite (which starts clean).
"""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgpo demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", "--output", dest="out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a smaller world, model and budget (about a minute; used by the smoke test)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, the model and every run (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever the output folder holds and start clean")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    from sgpo.commands.common import error, parse_args

    args = parse_args(build_parser(), argv)
    from sgpo.demo import PER_FAMILY_FILE, RESULTS_FILE, format_table, run_demo
    from sgpo.world.pipeline import OutputDirError

    try:
        results = run_demo(args.out, seed=args.seed, quick=args.quick, overwrite=args.overwrite, progress=not args.no_progress)
    except OutputDirError as exc:
        return error("demo", str(exc))
    print()
    print("Held-out accuracy (greedy), per problem family:")
    print(format_table(results["methods"]))
    m = results["methods"]
    print()
    print(json.dumps({name: {k: round(v, 3) for k, v in r.items() if k.startswith("heldout")} for name, r in m.items()}))
    print(f"wall time {results['wall_seconds']:.0f} s; written to {args.out}/{RESULTS_FILE}, {args.out}/{PER_FAMILY_FILE}, {args.out}/plots/, "
          f"{args.out}/grpo/report/index.html, {args.out}/sgpo/report/index.html")
    return 0
