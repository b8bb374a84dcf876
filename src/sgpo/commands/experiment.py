"""`sgpo experiment`: SGPO against SFT, GRPO, LUFFY and four SGPO ablations on the strategy world, each
method tuned on the same learning-rate grid (validation split), several RL seeds, held-out test.

    sgpo experiment --config experiments/world_v2.yaml --out runs/world-v2 --gate   # the gate first
    sgpo experiment --config experiments/world_v2.yaml --out runs/world-v2          # then the experiment

Writes DIR/results.json, DIR/results.md, DIR/plots/*.png and prints the main table (the protocol and
the folder's layout: `sgpo.world.experiment`; the figures: docs/results.md). `--gate` computes the
world's gate from the warm-up, GRPO and SFT alone (`sgpo.world.gate_run`) into DIR/gate.json and
DIR/gate.md. Results are confirmatory only under the pre-registered config (its hash, in the file the
config's `preregistration` names) after a passing gate; a changed config is refused unless
--exploratory, which marks the results as such. A rerun with the same configuration resumes: finished
runs are skipped. A folder holding anything else is refused unless --overwrite. Progress goes to
stderr, a line per run. `--plan` prints how far a folder has got (runs finished per method and stage,
the chosen rates) and an estimate of the time left, from the folder's own runs; it runs nothing and
shows no accuracy, so a pre-registered experiment can be watched while it runs.

    sgpo experiment --config experiments/world_v2_9.yaml --out runs/world-v2.9 --plan

`--sync-records DIR` keeps the folder's small files (each finished run's run.json and metrics.jsonl,
the gate, the results; not the models) in DIR, e.g. a folder committed with the code, and restores
them into a new folder, where the experiment goes on from them (`sgpo.world.experiment_records`):

    sgpo experiment --config experiments/world_v2_9.yaml --out runs/world-v2.9 --sync-records experiments/records/world-v2.9
"""

from __future__ import annotations

import argparse
import sys

from transformers.utils import logging as hf_logging

from sgpo.checkpoints import OutputDirError
from sgpo.commands.common import error, parse_args
from sgpo.world.experiment import ConfigError, NotReproducedError, load_config, run_experiment
from sgpo.world.experiment_plan import experiment_plan, format_plan
from sgpo.world.experiment_records import sync_records
from sgpo.world.experiment_results import format_markdown
from sgpo.world.gate_run import run_gate
from sgpo.world.progress import StageProgress

COMMAND = "experiment"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sgpo experiment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the experiment's YAML file (e.g. experiments/world_v1.yaml)")
    p.add_argument("--out", "--output", dest="out", required=True, help="output folder (resumed when it holds this experiment)")
    p.add_argument("--seeds", type=int, default=None, help="RL seeds per method (default: the config's `seeds`)")
    p.add_argument("--quick", action="store_true", help="the config's `quick:` setting: a smoke test of the whole protocol")
    p.add_argument("--overwrite", action="store_true", help="replace whatever the output folder holds and start clean")
    p.add_argument("--gate", action="store_true", help="compute the world's gate only (warm-up, GRPO, SFT): gate.json, gate.md")
    p.add_argument(
        "--exploratory",
        action="store_true",
        help="run a config other than the pre-registered one; its results are marked exploratory",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print how far the folder has got and an estimate of the time left; runs nothing, shows no accuracy",
    )
    p.add_argument(
        "--sync-records",
        metavar="DIR",
        default=None,
        help="copy the experiment's records (each finished run's run.json and metrics.jsonl, the gate, the results; "
        "not the models) from --out into DIR and what --out lacks from DIR into it, so the experiment can go on on "
        "another machine; runs nothing",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if args.seeds is not None and args.seeds < 1:
        return error(COMMAND, f"--seeds must be >= 1, got {args.seeds}")
    try:
        exp = load_config(args.config, quick=args.quick, seeds=args.seeds)
    except ConfigError as exc:
        return error(COMMAND, str(exc))
    if args.sync_records is not None:
        if args.gate or args.overwrite or args.plan:
            return error(COMMAND, "--sync-records only copies records; it takes neither --gate, --overwrite nor --plan")
        try:
            n = sync_records(args.out, args.sync_records, exp)
        except (OutputDirError, NotReproducedError) as exc:
            return error(COMMAND, str(exc))
        print(
            f"{n['saved']} files saved into {args.sync_records}, {n['restored']} restored into {args.out}; "
            f"the records hold {n['runs']} finished runs"
        )
        return 0
    if args.plan:
        if args.gate or args.overwrite:
            return error(COMMAND, "--plan only reads the folder; it takes neither --gate nor --overwrite")
        try:
            print(format_plan(experiment_plan(args.out, exp)))
        except ValueError as exc:
            return error(COMMAND, str(exc))
        return 0
    hf_logging.disable_progress_bar()
    try:
        with StageProgress(enabled=not args.no_progress, terminal=False) as progress:
            if args.gate:
                report = run_gate(args.out, exp, overwrite=args.overwrite, progress=progress)
            else:
                results = run_experiment(args.out, exp, overwrite=args.overwrite, progress=progress, exploratory=args.exploratory)
    except (OutputDirError, ConfigError, NotReproducedError) as exc:
        return error(COMMAND, str(exc))
    if args.gate:
        print(report["table"])
        print(
            f"wall time of this call {report['wall_seconds']['total']:.0f} s; written to {args.out}/gate.json, {args.out}/gate.md"
        )
        return 0
    print(format_markdown(results))
    print(
        f"wall time of this call {results['wall_seconds']['total']:.0f} s (runs skipped as finished are not in it; "
        f"every run's training + evaluation: {results['run_seconds_sum']:.0f} s); written to {args.out}/results.json, {args.out}/results.md, {args.out}/plots/"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
