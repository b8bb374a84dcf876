"""Where gate criterion C4's rank correlation comes from: the teacher/student token statistics of a
gate's warm-up, split by kind of token (docs/results.md, "World v2.3 prototypes").

    python scripts/teacher_token_kinds.py runs/world-v2.3a [--rows 120] [--size base]

The same rollouts and quantities as the gate (`sgpo.world.gate_measure.teacher_token_stats`: one
guided rollout per validation record at T = 1 from seed 0; KL(q_t ‖ p_t) of the guided teacher q and
the autonomous student p, and the student's NLL of the sampled token), re-scored here with each
token's kind: the method phrase (critical), step notations, separators (`,` `;`), digits, spaces,
other. Prints
Spearman(KL, NLL) over all tokens (the gate's figure), then per kind its share, mean KL, mean NLL
and the within-kind Spearman, as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import torch
from scipy.stats import spearmanr

from sgpo.data import read_rows
from sgpo.world.families import NOTATIONS_V2_1, SEPARATORS_V2_4
from sgpo.world.gate_measure import teacher_token_stats
from sgpo.world.methods import setup_dir
from sgpo.world.model import load_model


def kind_of(text: str, critical: bool) -> str:
    s = text.strip()
    if critical:
        return "critical"
    if s and s in NOTATIONS_V2_1:
        return "notation"
    if s and s in SEPARATORS_V2_4:
        return "separator"
    if s.isdigit():
        return "digit"
    return "space" if not s else "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="a gate's output folder (sgpo experiment --gate --out OUT)")
    p.add_argument("--rows", type=int, default=120, help="validation records, as the gate's gate.teacher_rows")
    p.add_argument("--size", default="base", choices=["base", "larger"])
    p.add_argument("--max-new-tokens", type=int, default=80)
    a = p.parse_args()
    torch.set_num_threads(1)
    setup = setup_dir(Path(a.out), a.size)
    model, tok = load_model(setup / "warmup")
    records = read_rows(setup / "world" / "validation.jsonl")[: a.rows]
    stats = teacher_token_stats(model, tok, records, max_new_tokens=a.max_new_tokens)
    rows = [
        (kind_of(tok.decode([t]), c), k, n)
        for t, c, k, n in zip(stats["token_ids"], stats["critical"], stats["kl"], stats["nll"])
    ]
    print(json.dumps({"tokens": len(rows), "spearman_kl_nll": spearmanr([r[1] for r in rows], [r[2] for r in rows]).correlation}))
    by: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for r in rows:
        by[r[0]].append(r)
    for kind, v in sorted(by.items(), key=lambda kv: -len(kv[1])):
        within = spearmanr([x[1] for x in v], [x[2] for x in v]).correlation if len(v) > 2 else None
        print(json.dumps({"kind": kind, "share": round(len(v) / len(rows), 3), "kl_mean": round(statistics.fmean(x[1] for x in v), 4),
                          "nll_mean": round(statistics.fmean(x[2] for x in v), 4), "spearman_within": within}))  # fmt: skip


if __name__ == "__main__":
    main()
