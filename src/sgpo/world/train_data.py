"""Training-data variants of the strategy world: which training problems train with a strategy, and
whose (docs/strategy-library.md, "Measured: training with retrieved strategies").

    own             every training problem keeps its own strategy (the world's `train.jsonl`)
    half            a random half of the training problems (`half_split`, drawn over all families)
                    lose their strong response and strategy: they train with RL only
    half_retrieved  that half gets strategies retrieved (`StrategyLibrary`, `only_missing`) from a
                    library built from the other half's extraction outputs
    mismatched      every training problem carries the strategy of *another* family (the
                    mismatched-strategy control: do SGPO's gains come from the strategy's content, or
                    from any extra context in the teacher's prompt?)

The variants other than `own` are written once into a world folder's `train-data/` (`write_variants`);
`scripts/library_world.py` uses the same split for its retrieval measurement.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sgpo.data import atomic_dir, read_rows, write_rows
from sgpo.library import RetrievalConfig, StrategyLibrary

VARIANTS = ("own", "half", "half_retrieved", "mismatched")
# what a problem without a strong response lacks: the response and everything extracted from it
STRONG_COLUMNS = ("response", "strategy", "strategy_json", "status", "reason", "detail", "critical_spans")


def half_split(n: int, seed: int) -> tuple[list[int], list[int]]:
    """(stripped, kept): row indices of a random half of `n` rows (`n // 2` of them, shuffled with
    `random.Random(seed)`) and of the others, each in ascending order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[: n // 2]), sorted(order[n // 2 :])


def without_strong(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` without its strong response and what was extracted from it."""
    return {k: v for k, v in row.items() if k not in STRONG_COLUMNS}


def half_rows(train: Sequence[Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The `half` variant: the `half_split` rows lose their strong columns (strategy null,
    strategy_source null), the others keep theirs (strategy_source "own"); same order as `train`."""
    stripped = set(half_split(len(train), seed)[0])
    return [
        {**without_strong(r), "strategy": None, "strategy_source": None} if i in stripped else {**r, "strategy_source": "own"}
        for i, r in enumerate(train)
    ]


def mismatched_rows(train: Sequence[Mapping[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The `mismatched` variant: each row's strategy is that of another family of the training data,
    drawn with `random.Random(f"{seed}:{id}")` among the other families' strategies (one per family,
    the first seen); `strategy_source` "mismatched", `strategy_family` the family it belongs to."""
    by_family: dict[str, str] = {}
    for r in train:
        by_family.setdefault(r["family"], r["strategy"])
    if len(by_family) < 2:
        raise ValueError("the mismatched variant needs training problems of at least two families")
    out = []
    for r in train:
        others = sorted(f for f in by_family if f != r["family"])
        other = random.Random(f"{seed}:{r['id']}").choice(others)
        out.append({**r, "strategy": by_family[other], "strategy_source": "mismatched", "strategy_family": other})
    return out


def variant_rows(train: Sequence[Mapping[str, Any]], seed: int) -> dict[str, list[dict[str, Any]]]:
    """{"half": …, "half_retrieved": …, "mismatched": …}: `half_rows`, the same rows with the
    stripped half's strategies retrieved from a library of the kept half
    (`RetrievalConfig(only_missing=True)`), and `mismatched_rows`."""
    half = half_rows(train, seed)
    library, _ = StrategyLibrary.build([[r for r in half if r["strategy_source"] == "own"]])
    return {
        "half": half,
        "half_retrieved": library.retrieve(half, RetrievalConfig(only_missing=True)).rows,
        "mismatched": mismatched_rows(train, seed),
    }


def variant_file(world: Path, variant: str) -> Path:
    """The training file of `variant` in a world folder (`own`: the world's train.jsonl)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown training-data variant {variant!r}; variants: {', '.join(VARIANTS)}")
    return world / "train.jsonl" if variant == "own" else world / "train-data" / f"{variant}.jsonl"


def write_variants(world: Path, seed: int) -> None:
    """Write `train-data/half.jsonl` and `half_retrieved.jsonl` from `world/train.jsonl`, once: the
    folder is written under a temporary name and renamed into place, and skipped when present."""
    folder = world / "train-data"
    if folder.exists():
        return

    def write(tmp: Path) -> None:
        for name, rows in variant_rows(read_rows(world / "train.jsonl"), seed).items():
            write_rows(tmp / f"{name}.jsonl", rows)

    atomic_dir(folder, write)
