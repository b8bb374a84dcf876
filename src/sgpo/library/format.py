"""The strategy library's records (`Entry`, `LibraryProblem`) and its format on disk (schema 1).

A library is a folder of three plain files, readable with `json` alone (docs/strategy-library.md):

    manifest.json   {"format": "sgpo-strategy-library", "schema": 1, counts, how entries were merged,
                     how problems are searched (the TF-IDF settings), the inputs it was built from}
    entries.jsonl   one distinct strategy per line: id, strategy (rendered), strategy_json (schema v1),
                    problems (ids), score, provenance (the input rows it came from), merged variants
    index.jsonl     one library problem per line: problem_id, problem, answer, entries (ids): what
                    retrieval searches (the problem texts) and where it leads (the entries)

A folder with another `schema` is refused with one line saying what to do; nothing is guessed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import DataError, iter_jsonl, write_json, write_rows
from sgpo.strategies.base import ExtractionError, Strategy, render_strategy
from sgpo.strategies.parsing import validate_strategy

FORMAT = "sgpo-strategy-library"
SCHEMA = 1
MANIFEST, ENTRIES, INDEX = "manifest.json", "entries.jsonl", "index.jsonl"


class LibraryError(DataError):
    """A library folder cannot be read or written (not a library, another schema, empty, malformed)."""


@dataclass
class Entry:
    """One distinct strategy of the library."""

    id: str
    strategy: str  # rendered (`render_strategy`), what a guided prompt carries
    strategy_json: str  # the strategy, JSON of schema v1
    problems: list[str]  # ids of the library problems it was extracted for
    num_rows: int  # input rows merged into this entry
    score: float | None = None  # mean `strategy_score` of this exact text's rows, when measured
    num_scored: int = 0  # rows of this text that carried a score
    merged_variants: list[str] = field(default_factory=list)  # other rendered texts merged into it
    provenance: list[dict[str, Any]] = field(default_factory=list)  # one per input row: source, row, extractor, ...

    def parsed(self) -> Strategy:
        return Strategy.model_validate_json(self.strategy_json)


@dataclass
class LibraryProblem:
    """One problem some entry was extracted for: what retrieval compares a new problem with."""

    problem_id: str
    problem: str
    answer: str | None
    entries: list[str]  # entry ids, best first (higher score, then more problems)


def write_library(
    folder: str | os.PathLike,
    entries: Sequence[Entry],
    problems: Sequence[LibraryProblem],
    manifest: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the three files into `folder` (created; written under a temporary name, then renamed) and
    return the manifest as written. An existing folder is replaced only with `overwrite`, and only
    when it is a library."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        if not overwrite:
            raise LibraryError(f"{folder}: already exists; choose another folder or pass --overwrite")
        if not (folder / MANIFEST).is_file():
            raise LibraryError(f"{folder}: exists and is not a strategy library; refusing to replace it")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_rows(tmp / ENTRIES, [asdict(e) for e in entries])
    write_rows(tmp / INDEX, [asdict(p) for p in problems])
    manifest = {**manifest, "format": FORMAT, "schema": SCHEMA, "entries": len(entries), "problems": len(problems)}
    manifest["files"] = {"entries": ENTRIES, "index": INDEX}
    write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return manifest


def read_library(folder: str | os.PathLike) -> tuple[list[Entry], list[LibraryProblem], dict[str, Any]]:
    """(entries, problems, manifest) of a library folder, checked. Raises `LibraryError` (one line
    naming the file, line and field) for a folder that is not a library, has another schema, is
    empty or malformed."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    entries = [_entry(folder / ENTRIES, n, row) for n, row in _lines(folder / ENTRIES)]
    problems = [_problem(folder / INDEX, n, row) for n, row in _lines(folder / INDEX)]
    if not entries:
        raise LibraryError(
            f"{folder}: the library is empty (0 entries in {ENTRIES}); build it from extraction outputs with status ok"
        )
    known: dict[str, int] = {}
    for e in entries:
        if e.id in known:
            raise LibraryError(f"{folder / ENTRIES}: entry id {e.id!r} appears twice")
        known[e.id] = 1
    for p in problems:
        missing = [eid for eid in p.entries if eid not in known]
        if missing:
            raise LibraryError(f"{folder / INDEX}: problem {p.problem_id!r} names unknown entry {missing[0]!r}")
    return entries, problems, manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a library folder, after the format and schema checks."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise LibraryError(f"{folder}: no such library folder")
    if not path.is_file():
        raise LibraryError(f"{folder}: not a strategy library (no {MANIFEST}); build one with `sgpo library build`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LibraryError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LibraryError(f"{path}: not a strategy library manifest (format is not {FORMAT!r})")
    if manifest.get("schema") != SCHEMA:
        raise LibraryError(
            f"{path}: library schema {manifest.get('schema')!r} is not supported (this sgpo reads schema {SCHEMA}); "
            "rebuild the library with this version's `sgpo library build`"
        )
    return manifest


def _lines(path: Path):
    if not path.is_file():
        raise LibraryError(f"{path}: missing (a library holds {MANIFEST}, {ENTRIES} and {INDEX})")
    for lineno, row, exc in iter_jsonl(path):
        if exc is not None:
            raise LibraryError(f"{path}: line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})")
        if not isinstance(row, dict):
            raise LibraryError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _field(path: Path, lineno: int, row: dict[str, Any], name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    value = row.get(name)
    if value is None and optional:
        return None
    if name not in row or not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        got = "missing" if name not in row else f"a {type(value).__name__}"
        raise LibraryError(f"{path}: line {lineno}: field {name!r} is {got}, expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _entry(path: Path, lineno: int, row: dict[str, Any]) -> Entry:
    strategy_json = _field(path, lineno, row, "strategy_json", str)
    try:
        strategy = parse_strategy_json(strategy_json)
    except ExtractionError as exc:
        raise LibraryError(f"{path}: line {lineno}: field 'strategy_json' is not a valid strategy ({exc.detail})") from None
    text = _field(path, lineno, row, "strategy", str)
    if text != render_strategy(strategy):
        raise LibraryError(f"{path}: line {lineno}: field 'strategy' is not the rendering of 'strategy_json'")
    return Entry(
        id=_field(path, lineno, row, "id", str),
        strategy=text,
        strategy_json=strategy_json,
        problems=[str(p) for p in _field(path, lineno, row, "problems", list)],
        num_rows=_field(path, lineno, row, "num_rows", int),
        score=_field(path, lineno, row, "score", (int, float), optional=True),
        num_scored=row.get("num_scored") or 0,
        merged_variants=list(row.get("merged_variants") or []),
        provenance=list(row.get("provenance") or []),
    )


def _problem(path: Path, lineno: int, row: dict[str, Any]) -> LibraryProblem:
    return LibraryProblem(
        problem_id=_field(path, lineno, row, "problem_id", str),
        problem=_field(path, lineno, row, "problem", str),
        answer=_field(path, lineno, row, "answer", str, optional=True),
        entries=[str(e) for e in _field(path, lineno, row, "entries", list)],
    )


def listing(lines: list[str], limit: int = 20) -> str:
    """`lines` as an indented list under a message, at most `limit` of them and a count of the rest."""
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n  " + "\n  ".join(lines[:limit]) + more


def text_value(value: Any) -> str | None:
    """A cell as text: strings as they are, numbers as `str(n)`; None for anything else (bools too)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


def parse_strategy_json(text: Any) -> Strategy:
    """A strategy from its JSON text (schema v1, the checks of extraction's `validate_strategy`);
    raises `ExtractionError` whose `detail` names the bad fields."""
    if not isinstance(text, str):
        raise ExtractionError("schema", f"expected JSON text, got {type(text).__name__}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExtractionError("invalid_json", f"{exc.msg} at column {exc.colno}") from None
    return validate_strategy(obj)
