"""The strategy library measured on the strategy world (docs/strategy-library.md, "Measured").

    python scripts/library_world.py --run runs/demo --out runs/library-world [--seed 0]

`--run` is a finished `sgpo demo` folder (or `python -m sgpo.commands.world` folder: the same world and
warm-up). Half of the training problems, drawn at random over all families (`--seed`), lose their
strong response and strategy; the library is built (`StrategyLibrary.build`) from the other half's
extraction outputs and strategies are retrieved for the first half. Reported:

(a) retrieval precision: the share of retrieved strategies that are their problem's family's
    strategy, on the stripped half and on the held-out problems;
(b) held-out guided accuracy of the warm-up policy with its own strategies vs retrieved ones (same
    problems, greedy, through `sgpo.world.evaluate.heldout_accuracy`, i.e. the evaluation harness).

Both again in a harder setting, `paraphrase held out`: the library keeps only problems asked with the
first two question paraphrases of each family, and the targets are the held-out problems asked with
the third, so retrieval must cross from one wording to another (TF-IDF only sees shared words).
Writes OUT/results.json and prints it with a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sgpo.data import read_rows, write_json, write_rows
from sgpo.library import RetrievalConfig, StrategyLibrary
from sgpo.world.families import FAMILIES, get_family
from sgpo.world.train_data import half_split, without_strong


def paraphrase_index(record: dict[str, Any]) -> int:
    """Which of its family's question paraphrases a problem is asked with (0, 1, 2)."""
    question = record["problem"].rpartition(" list :")[0]
    for i, q in enumerate(get_family(record["family"]).questions):
        if re.fullmatch(re.escape(q).replace(re.escape("{target}"), r"\d+"), question):
            return i
    raise ValueError(f"{record['id']}: question {question!r} is none of its family's paraphrases")


def precision(rows: list[dict[str, Any]], family_strategy: dict[str, str]) -> dict[str, Any]:
    """Share of rows with a retrieved strategy whose strategy is their family's, overall and per family."""
    got = [r for r in rows if r["strategy_source"] == "retrieved"]
    right = [r for r in got if r["strategy"] == family_strategy[r["family"]]]
    per_family = {}
    for fam in sorted({r["family"] for r in rows}):
        g = [r for r in got if r["family"] == fam]
        per_family[fam] = round(sum(r["strategy"] == family_strategy[fam] for r in g) / len(g), 4) if g else None
    return {
        "problems": len(rows),
        "retrieved": len(got),
        "precision": round(len(right) / len(got), 4) if got else None,
        "outcomes": dict(Counter(r["retrieval_outcome"] for r in rows)),
        "mean_similarity": round(sum(r["strategy_similarity"] for r in got) / len(got), 4) if got else None,
        "per_family": per_family,
    }


def guided(model, tokenizer, records: list[dict[str, Any]]) -> dict[str, Any]:
    from sgpo.world.evaluate import heldout_accuracy

    result = heldout_accuracy(model, tokenizer, records, max_new_tokens=64, batch_size=128)
    return {
        "n": result["n"],
        "auto": result["auto"],
        "guided": result["guided"],
        "per_family": {f: r["guided"] for f, r in result["per_family"].items()},
    }


def measure(
    name: str, library_rows, strip_rows, heldout, model, tokenizer, family_strategy, out: Path, config: RetrievalConfig
) -> dict:
    t0 = time.perf_counter()
    library, build = StrategyLibrary.build([library_rows])
    library.save(out / name / "library", overwrite=True)
    t_build = time.perf_counter() - t0
    stripped = library.retrieve([without_strong(r) for r in strip_rows], config).rows
    held = library.retrieve(heldout, config).rows  # every row retrieved for; its own strategy kept in own_strategy
    write_rows(out / name / "stripped-retrieved.jsonl", stripped)
    write_rows(out / name / "heldout-retrieved.jsonl", held)
    result = {
        "library": {"rows": build.used, "entries": build.entries, "problems": build.problems, "build_seconds": round(t_build, 2)},
        "precision_stripped": precision(stripped, family_strategy) if stripped else None,
        "precision_heldout": precision(held, family_strategy),
    }
    with_strategy = [r for r in held if r["strategy"]]
    own = [{**r, "strategy": r["own_strategy"]} for r in with_strategy]
    result["heldout_guided"] = (
        None
        if model is None
        else {
            "own": guided(model, tokenizer, own),
            "retrieved": guided(model, tokenizer, with_strategy),
            "without_retrieved_strategy": len(held) - len(with_strategy),
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished `sgpo demo` (or world pipeline) folder")
    ap.add_argument("--out", required=True, help="where libraries, retrieved files and results.json go")
    ap.add_argument("--seed", type=int, default=0, help="seed of the half split (default 0)")
    ap.add_argument("--min-similarity", type=float, default=RetrievalConfig().min_similarity)
    ap.add_argument("--precision-only", action="store_true", help="no guided-accuracy evaluation (needs no warm-up model)")
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    needs = ("world/train.jsonl", "world/heldout.jsonl") + (() if args.precision_only else ("warmup/model.safetensors",))
    for need in needs:
        if not (run / need).exists():
            raise SystemExit(f"{run}: not a finished demo / world folder ({need} missing)")
    from sgpo.world.model import load_model

    train, heldout = read_rows(run / "world" / "train.jsonl"), read_rows(run / "world" / "heldout.jsonl")
    family_strategy = {r["family"]: r["strategy"] for r in train}
    assert set(family_strategy) == {f.name for f in FAMILIES}
    strip, keep = half_split(len(train), args.seed)  # the same half as `sgpo experiment`'s training-data variants
    model, tokenizer = (None, None) if args.precision_only else load_model(run / "warmup")
    config = RetrievalConfig(only_missing=False, min_similarity=args.min_similarity)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "run": str(run),
        "seed": args.seed,
        "min_similarity": args.min_similarity,
        "split": {
            "stripped": len(strip),
            "library": len(keep),
            "stripped_per_family": dict(sorted(Counter(train[i]["family"] for i in strip).items())),
        },
    }
    results["same_paraphrases"] = measure(
        "same-paraphrases",
        [train[i] for i in keep],
        [train[i] for i in strip],
        heldout,
        model,
        tokenizer,
        family_strategy,
        out,
        config,
    )
    results["paraphrase_held_out"] = measure(
        "paraphrase-held-out",
        [train[i] for i in keep if paraphrase_index(train[i]) < 2],
        [train[i] for i in strip if paraphrase_index(train[i]) == 2],
        [r for r in heldout if paraphrase_index(r) == 2],
        model,
        tokenizer,
        family_strategy,
        out,
        config,
    )
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "results.json", results)
    print(json.dumps(results, indent=1))
    print()
    print(
        "| setting | library entries | precision (stripped half) | precision (held-out) | held-out guided, own | held-out guided, retrieved | no strategy |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in ("same_paraphrases", "paraphrase_held_out"):
        r = results[key]
        g = r["heldout_guided"]
        ps = r["precision_stripped"]["precision"] if r["precision_stripped"] else None
        acc = (
            f"{g['own']['guided']:.3f} (n={g['own']['n']}) | {g['retrieved']['guided']:.3f} | {g['without_retrieved_strategy']}"
            if g
            else "- | - | -"
        )
        print(f"| {key} | {r['library']['entries']} | {ps} | {r['precision_heldout']['precision']} | {acc} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
