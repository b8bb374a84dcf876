"""Building the world's data sets from a seed: records in the project's data format.

A record is `{"id", "family", "problem", "answer", "response", "strategy", "critical_spans"}`:
`response` is the oracle's worked solution, `answer` its boxed integer (as text), `critical_spans` the
character spans `[[start, end], ...]` (end exclusive) of `response` where the choice of procedure
shows, and `strategy` is `None` until the extractor fills it (`sgpo.world.extractor`).

Splits (every problem text occurs in one split only):
- `heldout`: evaluation problems, never trained on;
- `train`:   the problems GRPO / SGPO train on;
- `warmup`:  the problems of the supervised warm-up;
- `validation`: problems for choosing settings (`sgpo experiment` selects each method's learning rate
  on them), kept apart from `heldout`, the test set. Only `sgpo experiment` asks for it: a split
  missing from `WorldSpec.per_family` is not built (the demo's world has the first three).
They are generated in that order from streams seeded by `(seed, split, family)`, so a smaller world is
a prefix of a larger one for the same seed (the quick demo's held-out set is part of the full one's).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import read_rows, write_rows
from sgpo.world.families import Family, families_named, oracle_response, problem_text, sample_instance

SPLITS = ("heldout", "train", "warmup", "validation")  # generation order: a new split goes last


@dataclass(frozen=True)
class WorldSpec:
    """How many problems per family each split holds, and which families exist."""

    per_family: Mapping[str, int] = field(default_factory=lambda: {"heldout": 50, "train": 64, "warmup": 1000})
    families: Sequence[str] | None = None  # None: all families

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this world has (those named in `per_family`), in generation order."""
        return tuple(s for s in SPLITS if s in self.per_family)

    def __post_init__(self) -> None:
        unknown = set(self.per_family) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)} (splits: {', '.join(SPLITS)})")
        for split, n in self.per_family.items():
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"per_family[{split!r}] must be a non-negative int, got {n!r}")


def make_record(family: Family, rng: random.Random, record_id: str) -> dict[str, Any]:
    inst = sample_instance(family, rng)
    question = rng.choice(family.questions)
    response, spans = oracle_response(family, inst)
    return {
        "id": record_id,
        "family": family.name,
        "problem": problem_text(family, inst, question),
        "answer": str(family.answer(inst)),
        "response": response,
        "strategy": None,
        "critical_spans": spans,
    }


def build_world(seed: int, spec: WorldSpec = WorldSpec()) -> dict[str, list[dict[str, Any]]]:
    """Records of every split (families interleaved: record k of each family, then k+1, ...)."""
    seen: set[str] = set()
    world: dict[str, list[dict[str, Any]]] = {}
    families = families_named(spec.families)
    for split in spec.splits:
        n = spec.per_family[split]
        per_family: list[list[dict[str, Any]]] = []
        for fam in families:
            rng = random.Random(f"sgpo-world:{seed}:{split}:{fam.name}")
            rows: list[dict[str, Any]] = []
            attempts = 0
            while len(rows) < n:
                attempts += 1
                if attempts > 50 * n + 1000:
                    raise RuntimeError(f"could not draw {n} distinct {fam.name} problems for split {split!r}")
                rec = make_record(fam, rng, f"{split}-{fam.name}-{len(rows)}")
                if rec["problem"] in seen:
                    continue
                seen.add(rec["problem"])
                rows.append(rec)
            per_family.append(rows)
        world[split] = [rows[k] for k in range(n) for rows in per_family]
    return world


def write_world(out_dir: str | Path, world: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Path]:
    """One `<split>.jsonl` per split under `out_dir`; returns the paths."""
    return {split: write_rows(Path(out_dir) / f"{split}.jsonl", rows) for split, rows in world.items()}


def read_world(out_dir: str | Path, splits: Sequence[str] = SPLITS) -> dict[str, list[dict[str, Any]]]:
    return {split: read_rows(Path(out_dir) / f"{split}.jsonl") for split in splits}
