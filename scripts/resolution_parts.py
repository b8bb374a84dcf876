"""What gate criterion C8 (the 95 % half-width of the GRPO − SFT paired-bootstrap interval on the test
split) is made of, and how it would move with more seeds (docs/results.md, "World v2.8").

    python scripts/resolution_parts.py runs/world-v2.8

Reads each finished run's per-problem test verdicts (`runs/<method>/lr=<rate>,seed=<s>/run.json`) at
the rates the gate chose (`gate.json`, base size) and prints, as JSON lines: the gate's half-width
over all seeds; the half-width over consecutive subsets of k seeds (the same bootstrap,
`sgpo.world.claims.paired_bootstrap`); and its two parts in the normal approximation, seeds only
(1.96 × the standard deviation of the seeds' mean differences / √seeds, which falls as 1/√seeds) and
problems only (1.96 × that of the problems' seed-mean differences / √problems, which more seeds do
not shrink), with the half-width they predict at other seed counts, scaled by the bootstrap's ratio
to the approximation at the seeds run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from sgpo.world.claims import paired_bootstrap
from sgpo.world.methods import run_dir


def verdicts(out: Path, method: str, lr: float) -> np.ndarray:
    """(seeds, problems) test pass rates of `method` at `lr`, seeds 0, 1, … while they exist."""
    rows, seed = [], 0
    while (path := run_dir(out, method, lr, seed) / "run.json").exists():
        rows.append(json.loads(path.read_text())["test"]["correct"]["auto"])
        seed += 1
    return np.array(rows, dtype=np.float64)


def half_width(a: np.ndarray, b: np.ndarray, samples: int) -> float:
    low, high = paired_bootstrap(a, b, samples)["ci95"]
    return (high - low) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="an `sgpo experiment --gate` folder whose base size is measured")
    parser.add_argument("--samples", type=int, default=2000, help="bootstrap resamples (the gate's: 2000)")
    parser.add_argument("--predict", type=int, nargs="*", default=[12, 15, 20], help="seed counts to predict")
    args = parser.parse_args()
    chosen = json.loads((args.out / "gate.json").read_text())["sizes"]["base"]["chosen_learning_rates"]
    g, s = verdicts(args.out, "grpo", chosen["grpo"]), verdicts(args.out, "sft", chosen["sft"])
    n = min(len(g), len(s))
    g, s = g[:n], s[:n]
    full = half_width(g, s, args.samples)
    print(json.dumps({"seeds": n, "problems": g.shape[1], "half_width": round(full, 4)}))
    for k in range(2, n, 2):
        subsets = [half_width(g[i : i + k], s[i : i + k], args.samples) for i in range(0, n - k + 1, k)]
        print(json.dumps({"seeds": k, "half_width_of_subsets": [round(h, 4) for h in subsets]}))
    d = g - s
    seeds_part = 1.96 * d.mean(axis=1).std(ddof=1) / math.sqrt(n)
    problems_part = 1.96 * d.mean(axis=0).std(ddof=1) / math.sqrt(d.shape[1])
    ratio = full / math.hypot(seeds_part, problems_part)
    print(json.dumps({"seeds_part": round(seeds_part, 4), "problems_part": round(problems_part, 4), "ratio": round(ratio, 3)}))
    for k in args.predict:
        predicted = ratio * math.hypot(seeds_part * math.sqrt(n / k), problems_part)
        print(json.dumps({"seeds": k, "predicted_half_width": round(predicted, 4)}))


if __name__ == "__main__":
    main()
