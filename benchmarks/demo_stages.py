"""Stage times of the demo under two ways of using the CPU cores, side by side in one run.

    before: one process with 2 torch threads does everything: the warm-up, then GRPO, then SGPO
    after:  every process single-threaded (the demo's setting): the warm-up data-parallel in 2
            processes, GRPO and SGPO side by side in 2 processes

Each variant runs the demo's pipeline (`sgpo.world.pipeline.run_pipeline`) on the full world and
model with a shortened budget (`--warmup-steps`, `--train-steps`; the held-out evaluation is the full
one) in a fresh process and its own folder; the variants alternate, and their order flips every
round, so a slow spell on a shared machine hits both alike. Prints one JSON line per run, then

    {"median": {variant: {stage: seconds}}, "after_vs_before": {stage: ratio}}

usage: python benchmarks/demo_stages.py [--warmup-steps 150] [--train-steps 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

VARIANTS = {
    "before": dict(threads=2, warmup_processes=1, side_by_side=False),
    "after": dict(threads=1, warmup_processes=2, side_by_side=True),
}
STAGES = ("warm-up", "evaluate warmup", "train grpo", "train sgpo", "train + evaluate")


def run_variant(out: str, variant: str, warmup_steps: int, train_steps: int) -> dict[str, float]:
    """One shortened demo in this process; returns its stage wall seconds."""
    from sgpo.world.pipeline import run_pipeline
    from sgpo.world.settings import make_config

    settings = dict(VARIANTS[variant])
    side_by_side = settings.pop("side_by_side")
    cfg = make_config(0)
    cfg = replace(
        cfg, warmup=replace(cfg.warmup, steps=warmup_steps), train=replace(cfg.train, max_steps=train_steps), **settings
    )
    return run_pipeline(out, cfg, side_by_side=side_by_side)["wall_seconds"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup-steps", type=int, default=150, help="warm-up steps (the demo: 900)")
    ap.add_argument("--train-steps", type=int, default=10, help="optimizer steps of each run (the demo: 60)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("OUT", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_variant(args.child[0], args.child[1], args.warmup_steps, args.train_steps)))
        return 0
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    times: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
            for variant in order:
                out = Path(tmp) / f"{variant}-{r}"
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    str(out),
                    variant,
                    "--warmup-steps",
                    str(args.warmup_steps),
                    "--train-steps",
                    str(args.train_steps),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    sys.exit(proc.stderr[-3000:])
                walls = json.loads(proc.stdout.splitlines()[-1])
                times[variant].append(walls)
                print(json.dumps({"round": r, "variant": variant, **{s: walls[s] for s in STAGES}}), flush=True)
    median = {v: {s: round(statistics.median(w[s] for w in runs), 2) for s in STAGES} for v, runs in times.items()}
    ratio = {s: round(median["after"][s] / median["before"][s], 3) for s in STAGES}
    print(
        json.dumps(
            {
                "warmup_steps": args.warmup_steps,
                "train_steps": args.train_steps,
                "rounds": args.rounds,
                "median": median,
                "after_vs_before": ratio,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
