"""Which procedure a strategy-world model writes without a strategy: the method phrases it samples on
held-out problems, per family of the problem (docs/results.md, "World v2.4" and "World v2.5").

    python scripts/method_phrases.py runs/world-v2.5 runs/world-v2.5/setup/warmup "runs/world-v2.5/runs/sft/lr=0.0001,seed=0"

For every model folder given: one sample at T = 1 (seed 0) of the first 12 tokens of a solution for the
first `--per-family` held-out problems of each family (OUT/setup/world/heldout.jsonl), autonomous prompt;
prints, as JSON lines, the count (`sgpo.world.gate_measure.method_span`; a sample without one is
counted as `(no method phrase)`) of each method phrase over all those problems, then per family of the
problem. A favourite procedure (written far more often than its family is asked) is the model's
default for a question it cannot read.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

from sgpo.data import read_rows
from sgpo.prompts import tokenize_prompts
from sgpo.rollout import generate_completions
from sgpo.world.gate_measure import method_span
from sgpo.world.model import load_model
from sgpo.world.prompt import WORLD_PROMPT_FORMAT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="an experiment's output folder (its setup/world/heldout.jsonl is read)")
    p.add_argument("models", nargs="+", help="model folders (a warm-up, a run)")
    p.add_argument("--per-family", type=int, default=60, help="held-out problems per family")
    a = p.parse_args()
    torch.set_num_threads(1)
    records = read_rows(Path(a.out) / "setup" / "world" / "heldout.jsonl")
    families = sorted({r["family"] for r in records})
    rows = [r for f in families for r in [x for x in records if x["family"] == f][: a.per_family]]
    for path in a.models:
        model, tok = load_model(path)
        prompts = tokenize_prompts(tok, [WORLD_PROMPT_FORMAT.render(tok, r["problem"]) for r in rows], max_length=None)
        torch.manual_seed(0)
        texts = generate_completions(model, tok, prompts, max_new_tokens=12, temperature=1.0).texts
        spans = [method_span(t) for t in texts]
        phrase = [t[slice(*span)] if span else "(no method phrase)" for t, span in zip(texts, spans)]
        print(json.dumps({"model": path, "problems": len(rows), "written": dict(collections.Counter(phrase).most_common())}))
        for f in families:
            mine = collections.Counter(m for m, r in zip(phrase, rows) if r["family"] == f)
            print(json.dumps({"model": path, "family": f, "written": dict(mine.most_common(4))}))


if __name__ == "__main__":
    main()
