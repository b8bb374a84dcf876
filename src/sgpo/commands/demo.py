"""`sgpo demo`: the strategy world end to end — warm-up, GRPO vs SGPO at equal budgets, evaluation.

Writes DIR/results.json, DIR/per_family.json, DIR/plots/*.png, DIR/{grpo,sgpo}/report/index.html and
prints the held-out accuracy table. A rerun of the same configuration resumes where an interrupted one
stopped; a folder holding anything else is refused unless --overwrite (which starts clean). Progress
goes to stderr: a bar per stage on a terminal, otherwise a line per stage and at least every 30 s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from transformers.utils import logging as hf_logging

from sgpo.checkpoints import OutputDirError
from sgpo.commands.common import error, parse_args
from sgpo.world.pipeline import DEMO_METHODS, WARMUP_FILE, run_pipeline
from sgpo.world.progress import StageProgress
from sgpo.world.results import PER_FAMILY_FILE, RESULTS_FILE, against_warmup, format_table, headline
from sgpo.world.settings import make_config


def build_parser(
    prog: str = "sgpo demo", description: str | None = __doc__, out_default: str | None = "runs/demo"
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    out_help = (
        f"output folder (default: {out_default})"
        if out_default
        else "output folder (created; see sgpo.world.pipeline for its layout)"
    )
    parser.add_argument("--out", "--output", dest="out", default=out_default, required=out_default is None, help=out_help)
    parser.add_argument(
        "--quick", action="store_true", help="a smaller world, model and budget: a smoke test of every stage (1-2 min on 2 cores)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, the model and every run (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace whatever the output folder holds and start clean")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars / progress lines")
    return parser


def run_command(argv: list[str] | None, prog: str = "sgpo demo", methods: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the pipeline with `methods` (None: GRPO and SGPO, the demo), print the table."""
    demo = methods is None
    description = (
        __doc__ if demo else "The strategy world's stages up to the warm-up's held-out evaluation (see sgpo.world.pipeline)."
    )
    args = parse_args(build_parser(prog, description, "runs/demo" if demo else None), argv)

    hf_logging.disable_progress_bar()  # our own progress only
    try:
        with StageProgress(enabled=not args.no_progress) as progress:
            run = run_pipeline(
                args.out,
                make_config(args.seed, args.quick),
                methods=DEMO_METHODS if demo else methods,
                overwrite=args.overwrite,
                progress=progress,
            )
    except OutputDirError as exc:
        if demo:
            return error("demo", str(exc))
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    heldout = run["methods"]
    print()
    print(f"Held-out accuracy ({run['metric']}), per problem family:")
    print(format_table(heldout))
    print()
    print(json.dumps(headline(heldout)))
    if demo:
        print(against_warmup(heldout))
        print(
            "One seed, one warm-up, one learning rate: the intervals hold the noise of the test problems only, not of the "
            "training seed, so they cannot order GRPO and SGPO. The tuned comparison, fifteen seeds per method, and its "
            'verdict on each of the paper\'s claims: docs/results.md, "World v2.9: the pre-registered experiment".'
        )
    written = [
        f"{args.out}/{name}"
        for name in (
            (RESULTS_FILE, PER_FAMILY_FILE, "plots/", "grpo/report/index.html", "sgpo/report/index.html")
            if demo
            else (WARMUP_FILE,)
        )
    ]
    print(f"wall time {run['wall_seconds']['total']:.0f} s; written to {', '.join(written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(argv)
