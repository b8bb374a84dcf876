"""Building the world's data sets from a seed: records in the project's data format.

A record is `{"id", "family", "problem", "answer", "response", "strategy", "critical_spans"}`:
`response` is the oracle's worked solution, `answer` its boxed integer (as text), `critical_spans` the
character spans `[[start, end], ...]` (end exclusive) of `response` where the choice of procedure
shows, and `strategy` is `None` until the extractor fills it (`sgpo.world.extractor`).

Splits (every problem text occurs in one split only):
- `heldout`: evaluation problems, never trained on;
- `train`:   the problems GRPO / SGPO train on;
- `warmup`:  the problems of the supervised warm-up (lists of `WorldSpec.warmup_length` when set);
- `validation`: problems for choosing settings (`sgpo experiment` selects each method's learning rate
  on them), kept apart from `heldout`, the test set;
- `novel`:   the generalisation split's new wordings: problems asked with a family's
  `novel_questions`, which no other split uses (lists of the usual length);
- `longer`:  the generalisation split's longer instances: lists of `WorldSpec.longer_length`
  numbers, longer than any list of the other splits (asked with the usual wordings).
A split missing from `WorldSpec.per_family` is not built. They are generated in that order from streams seeded by `(seed, split, family)`, so a smaller world is
a prefix of a larger one for the same seed (the quick demo's held-out set is part of the full one's).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import read_rows, write_rows
from sgpo.world.families import LIST_LENGTH, Family, families_named, oracle_response, problem_text, sample_instance

SPLITS = ("heldout", "train", "warmup", "validation", "novel", "longer")  # generation order: a new split goes last
GENERALISATION_SPLITS = ("novel", "longer")


@dataclass(frozen=True)
class WorldSpec:
    """How many problems per family each split holds, which families exist (a list of names, or a
    world's name: "v1", "v2"; None: the default world, `sgpo.world.families.DEFAULT_WORLD`), and
    how long the lists are (`list_length`; the `longer` split's `longer_length`; the `warmup` split's
    `warmup_length`, None: `list_length` — v2.1's warm-up demonstrates lists as long as the `longer`
    split's, so that `longer` tests lengths the RL training problems do not have, not lengths the
    model has never read)."""

    per_family: Mapping[str, int] = field(default_factory=lambda: {"heldout": 50, "train": 64, "warmup": 1000})
    families: Sequence[str] | str | None = None
    list_length: tuple[int, int] = LIST_LENGTH
    longer_length: tuple[int, int] = (9, 9)
    warmup_length: tuple[int, int] | None = None

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
        families = families_named(self.families)  # raises ValueError on an unknown world or family
        lo, hi = self.list_length
        if not 1 <= lo <= hi:
            raise ValueError(f"list_length must be (min, max) with 1 <= min <= max, got {self.list_length}")
        if "longer" in self.per_family and not hi < self.longer_length[0] <= self.longer_length[1]:
            raise ValueError(
                f"longer_length {self.longer_length} must be longer than every list of list_length {self.list_length}"
            )
        if self.warmup_length is not None and not 1 <= self.warmup_length[0] <= self.warmup_length[1]:
            raise ValueError(f"warmup_length must be (min, max) with 1 <= min <= max, got {self.warmup_length}")
        if "novel" in self.per_family:
            missing = [f.name for f in families if not f.novel_questions]
            if missing:
                raise ValueError(f"the novel split needs novel_questions, which family {missing[0]!r} has none of")

    def to_dict(self) -> dict[str, Any]:
        families = self.families if self.families is None or isinstance(self.families, str) else list(self.families)
        d: dict[str, Any] = {"per_family": dict(self.per_family), "families": families}
        if (self.list_length, self.longer_length) != (LIST_LENGTH, (9, 9)):  # as config.json was before they existed
            d.update(list_length=list(self.list_length), longer_length=list(self.longer_length))
        if self.warmup_length is not None:
            d["warmup_length"] = list(self.warmup_length)
        return d

    def length_of(self, split: str) -> tuple[int, int]:
        """The (min, max) list length of `split`'s problems."""
        if split == "longer":
            return self.longer_length
        if split == "warmup" and self.warmup_length is not None:
            return self.warmup_length
        return self.list_length


def make_record(
    family: Family, rng: random.Random, record_id: str, split: str = "heldout", spec: WorldSpec | None = None
) -> dict[str, Any]:
    spec = spec or WorldSpec()
    inst = sample_instance(family, rng, spec.length_of(split))
    question = rng.choice(family.novel_questions if split == "novel" else family.questions)
    response, spans = oracle_response(family, inst, rng)
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
                rec = make_record(fam, rng, f"{split}-{fam.name}-{len(rows)}", split, spec)
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
