"""Train GRPO and SGPO again from a finished demo's warm-up checkpoint under other shared settings.

    python scripts/demo_sweep.py --demo runs/demo --out runs/demo-sweep --set learning_rate=2e-4 --set learning_rate=5e-5

Each `--set` is one setting of `sgpo.world.pipeline.TrainSettings` fields (comma-separated `field=value`
pairs), applied to both methods alike. The demo's world and warm-up are reused (linked, not copied or
retrained), so one setting costs the two training runs and their evaluation, side by side.
Prints one JSON line per setting: `{"setting": ..., "grpo": {...}, "sgpo": {...}}` with held-out
autonomous / guided accuracy overall and per family, and the number of zero-gradient steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import fields, replace
from pathlib import Path

from sgpo.evaluation.report import read_metrics
from sgpo.world.pipeline import METHODS, make_config, run_in_workers, train_and_evaluate


def parse_setting(text: str, defaults) -> dict:
    """`"field=value,field=value"` -> `{field: value}`, each value of the type of its default."""
    known = [f.name for f in fields(defaults)]
    out = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        if key not in known:
            raise SystemExit(f"--set {text!r}: unknown field {key!r}; fields: {', '.join(known)}")
        out[key] = type(getattr(defaults, key))(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", required=True, help="a finished `sgpo demo` folder (full, not --quick)")
    ap.add_argument("--out", required=True, help="where the sweep's runs go (one sub-folder per setting)")
    ap.add_argument("--set", dest="settings", action="append", required=True, help="field=value[,field=value]")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    demo = Path(args.demo).resolve()
    for need in ("world/train.jsonl", "world/heldout.jsonl", "warmup/model.safetensors"):
        if not (demo / need).exists():
            raise SystemExit(f"{demo}: not a finished demo folder ({need} missing)")
    base = make_config(args.seed, quick=False)
    for text in args.settings:
        cfg = replace(base, train=replace(base.train, **parse_setting(text, base.train)))
        run = Path(args.out) / text.replace(",", "_").replace("=", "-")
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        for d in ("world", "warmup"):
            os.symlink(demo / d, run / d)
        result = {"setting": text}
        # as in `sgpo demo`: the two runs side by side, one single-threaded process each
        runs = run_in_workers([(train_and_evaluate, (run, cfg, m), {}) for m in METHODS], lambda *message: None)
        for method, (r, _, _) in zip(METHODS, runs):
            logs, _ = read_metrics(run / method / "metrics.jsonl")
            r["zero_gradient_steps"] = sum(1 for x in logs if x.get("grad_norm") == 0.0)
            result[method] = r
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
