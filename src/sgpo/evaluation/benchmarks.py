"""Benchmark registry and loading: named math benchmarks, local files, strategy-world splits.

A benchmark is given as
- a registry name (`math500`, `aime24`, ...): read from `DATA_DIR/<name>.jsonl|.json|.parquet`, from
  `DATA_DIR/<name>/test.jsonl|.json|.parquet` (the layout RL-for-math repositories ship), or from a
  `save_to_disk` folder `DATA_DIR/<name>` when a data folder is given — no network then — else from
  the Hugging Face hub;
- a path to a `.jsonl` / `.json` / `.parquet` file or `save_to_disk` folder with `problem` and
  `answer` columns (any other columns, e.g. the strategy world's `strategy`, `family`, are kept);
- `label=path`, to name a file in the tables.

Hub column names are mapped to `problem` / `answer` (`question` → `problem`, OlympiadBench's
`final_answer` list → one answer); a local copy may keep either the hub's or the canonical names, and
other names are given with a `ColumnMap` (`sgpo eval --problem-column ... --answer-column ...`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import FILE_SUFFIXES, ColumnMap, DataError, load_problems, read_rows


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a named benchmark lives on the hub and which columns hold the problem and the answer."""

    name: str
    hf_id: str
    split: str
    problem: str
    answer: str
    config: str | None = None
    context: str | None = None  # a column prepended to the problem when non-empty
    description: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec(
            "aime24",
            "HuggingFaceH4/aime_2024",
            "train",
            "problem",
            "answer",
            description="AIME 2024 I and II, 30 problems, integer answers",
        ),
        BenchmarkSpec(
            "aime25",
            "math-ai/aime25",
            "test",
            "problem",
            "answer",
            description="AIME 2025 I and II, 30 problems, integer answers",
        ),
        BenchmarkSpec("amc23", "math-ai/amc23", "test", "question", "answer", description="AMC 2023, 40 problems"),
        BenchmarkSpec(
            "math500",
            "HuggingFaceH4/MATH-500",
            "test",
            "problem",
            "answer",
            description="MATH-500 (Lightman et al.), 500 problems",
        ),
        BenchmarkSpec(
            "minerva", "math-ai/minervamath", "test", "question", "answer", description="Minerva Math (OCWCourses), 272 problems"
        ),
        BenchmarkSpec(
            "olympiadbench",
            "math-ai/olympiadbench",
            "test",
            "question",
            "final_answer",
            context="context",
            description="OlympiadBench, text-only English math, 674 problems",
        ),
    ]
}

_PROBLEM_ALIASES = ("problem", "question", "Problem", "Question")
_ANSWER_ALIASES = ("answer", "final_answer", "Answer")
_ID_ALIASES = ("id", "unique_id", "ID")


@dataclass
class Benchmark:
    """A loaded benchmark: validated records with at least `id`, `problem`, `answer`."""

    name: str
    source: str
    records: list[dict[str, Any]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.records)


def _answer_text(value: Any) -> Any:
    """One answer string from a hub value: lists are joined (OlympiadBench's `final_answer`),
    integral floats lose their `.0` (AMC answers stored as floats)."""
    if isinstance(value, (list, tuple)):
        parts = [str(v).strip() for v in value if v is not None and str(v).strip()]
        return ", ".join(parts) if parts else None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def _first_present(row: dict, names) -> str | None:
    return next((c for c in names if c in row), None)


def canonical_rows(
    rows: list[dict[str, Any]], spec: BenchmarkSpec | None = None, columns: ColumnMap = ColumnMap()
) -> list[dict[str, Any]]:
    """Rows with `problem`, `answer` (and `id`, `strategy` when the source has them) under their
    canonical names; the columns named in `columns` come first, then the registry's, then the usual
    aliases. The other columns are kept. Rows missing a column are passed through for
    `load_problems` to name."""
    problem_cols = (columns.problem,) + ((spec.problem,) if spec else ()) + _PROBLEM_ALIASES
    answer_cols = (columns.answer,) + ((spec.answer,) if spec else ()) + _ANSWER_ALIASES
    id_cols = (columns.id,) + _ID_ALIASES
    out = []
    for row in rows:
        row = dict(row)
        pcol, acol, icol = (_first_present(row, problem_cols), _first_present(row, answer_cols), _first_present(row, id_cols))
        if pcol is not None and pcol != "problem":
            row["problem"] = row.pop(pcol)
        if spec is not None and spec.context and isinstance(row.get(spec.context), str) and row[spec.context].strip():
            row["problem"] = f"{row[spec.context].strip()}\n\n{row['problem']}"
        if acol is not None:
            row["answer"] = _answer_text(row.pop(acol))
        if icol is not None and icol != "id":
            row["id"] = row.pop(icol)
        if columns.strategy != "strategy" and columns.strategy in row:
            row["strategy"] = row.pop(columns.strategy)
        out.append(row)
    return out


def _validated(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    try:
        ds = load_problems(rows)
    except DataError as exc:  # load_problems names a list source "<list>"; name the real one
        msg = str(exc)
        raise DataError(name + msg[len("<list>") :] if msg.startswith("<list>") else f"{name}: {msg}") from None
    return ds.to_list()


def _local_copy(data_dir: Path, name: str) -> Path | None:
    """`DATA_DIR/NAME.{jsonl,json,parquet}`, else `DATA_DIR/NAME/test.{jsonl,json,parquet}`, else the
    folder `DATA_DIR/NAME` (read as a `save_to_disk` folder); None when there is none of them."""
    for candidate in [data_dir / f"{name}{suffix}" for suffix in FILE_SUFFIXES] + [
        data_dir / name / f"test{suffix}" for suffix in FILE_SUFFIXES
    ]:
        if candidate.is_file():
            return candidate
    return data_dir / name if (data_dir / name).is_dir() else None


def _read_local(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: not a data set folder written by save_to_disk ({exc})") from exc
        if isinstance(loaded, datasets.DatasetDict):
            split = "test" if "test" in loaded else next(iter(loaded))
            loaded = loaded[split]
        return loaded.to_list()
    return read_rows(path)


def _read_hub(spec: BenchmarkSpec) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(spec.hf_id, spec.config, split=spec.split)
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"{spec.name}: could not load {spec.hf_id} (split {spec.split}) from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). Offline, give --data-dir DIR with DIR/{spec.name}.jsonl; "
            f'make it where the hub is reachable with: python -c "from datasets import load_dataset; '
            f"load_dataset('{spec.hf_id}', split='{spec.split}').to_json('DIR/{spec.name}.jsonl')\""
        ) from exc
    return ds.to_list()


def load_benchmark(
    spec: str, data_dir: str | os.PathLike | None = None, limit: int | None = None, columns: ColumnMap = ColumnMap()
) -> Benchmark:
    """Load one benchmark given by registry name, path, or `label=path` (see the module docstring).
    `limit` keeps the first N problems; `columns` names the source's columns when they are not the
    canonical ones."""
    label, _, target = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
    label, target = label.strip(), target.strip()
    if target in BENCHMARKS:
        bspec = BENCHMARKS[target]
        local = _local_copy(Path(data_dir), target) if data_dir is not None else None
        if data_dir is not None and local is None:
            raise DataError(
                f"{target}: no {target}.jsonl/.json/.parquet file, {target}/test.jsonl/.json/.parquet file or "
                f"save_to_disk folder {target}/ in --data-dir {data_dir}"
            )
        rows, source = (_read_local(local), str(local)) if local else (_read_hub(bspec), f"hf:{bspec.hf_id}")
        name = label or target
    else:
        path = Path(target).expanduser()
        if not path.exists():
            known = ", ".join(BENCHMARKS)
            raise DataError(f"{target}: not a known benchmark ({known}) and no such file or folder")
        bspec, rows, source = None, _read_local(path), str(path)
        name = label or (path.stem if path.is_file() else path.name)
    rows = canonical_rows(rows, bspec, columns)
    if limit is not None:
        rows = rows[:limit]
    return Benchmark(name=name, source=source, records=_validated(rows, source))


def load_benchmarks(
    specs: str, data_dir: str | os.PathLike | None = None, limit: int | None = None, columns: ColumnMap = ColumnMap()
) -> list[Benchmark]:
    """Load a comma-separated list of benchmarks (names must be unique)."""
    items = [s.strip() for s in specs.split(",") if s.strip()]
    if not items:
        raise DataError("no benchmark given")
    out: list[Benchmark] = []
    for item in items:
        bench = load_benchmark(item, data_dir, limit, columns)
        if any(b.name == bench.name for b in out):
            raise DataError(f"two benchmarks are named {bench.name!r}; name one with label=path")
        out.append(bench)
    return out
