"""Building a strategy library from extraction outputs (`sgpo extract`, `sgpo score-strategies`).

Rows with `status` ok and a strategy are used (a row without a `status` column counts as ok, as in
`score-strategies`); other rows are skipped and counted by status and reason, and so are rows that
`sgpo library retrieve` filled (`strategy_source` = retrieved: the strategy was not extracted for
that problem, and a library must not feed on itself). A used row must have a
`problem` and a `strategy_json` that passes the strategy schema, and its `strategy` must be the
rendering of it; a row that breaks this is reported with its file, row and field (`build_entries`
refuses the input, or skips and lists such rows with `skip_invalid`), never dropped silently.

Merging: identical rendered texts are one strategy; distinct texts are clustered by TF-IDF cosine
(`similarity.leader_clusters`, threshold `merge_threshold`, default 0.9), and each cluster is one
entry. An entry's text is its best variant: the highest mean `strategy_score` when `score-strategies`
measured one, else the variant with the most rows, else the first; the other texts are kept in
`merged_variants`. The library therefore grows with distinct strategies, not with rows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sgpo.data import ColumnMap, DataError, load_rows
from sgpo.library.format import FORMAT, Entry, LibraryError, LibraryProblem, listing, parse_strategy_json, text_value
from sgpo.library.similarity import VECTORIZER, leader_clusters
from sgpo.strategies.base import ExtractionError, render_strategy

#: provenance columns of an extraction output row that an entry keeps, per row
PROVENANCE_COLUMNS = ("extractor", "extractor_model", "prompt_version", "content_hash")


@dataclass(frozen=True)
class BuildConfig:
    """How a library is built from extraction outputs."""

    #: TF-IDF cosine (word 1-2-grams) between rendered strategies at or above which two distinct texts
    #: are one entry; > 1 merges only identical texts
    merge_threshold: float = 0.9
    #: skip rows that fail the checks (listed in the summary) instead of refusing the whole input
    skip_invalid: bool = False
    #: input columns holding the problem, gold answer, rendered strategy and row id
    columns: ColumnMap = field(default_factory=ColumnMap)
    #: input column with the strategy as JSON (schema v1)
    strategy_json_column: str = "strategy_json"
    #: input column with the `score-strategies` score (guided - autonomous accuracy), when present
    score_column: str = "strategy_score"

    def __post_init__(self) -> None:
        if not 0.0 < self.merge_threshold:
            raise ValueError(f"merge_threshold must be > 0, got {self.merge_threshold}")


@dataclass
class BuildSummary:
    """What a build did: `used + sum(skipped) + invalid == rows`."""

    inputs: list[str]
    rows: int
    used: int
    skipped: dict[str, int]
    invalid: list[str]
    distinct_texts: int
    entries: int
    problems: int
    merge_threshold: float
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        width = len(str(self.rows))
        lines = [
            f"library{' ' + self.output if self.output else ''}: {self.entries} entries for {self.problems} problems, "
            f"from {self.rows} rows of {len(self.inputs)} input(s)",
            f"  used      {self.used:>{width}}  (status ok, with a strategy)",
            f"  skipped   {sum(self.skipped.values()):>{width}}" + (f"  ({skipped})" if skipped else ""),
            f"  invalid   {len(self.invalid):>{width}}" + ("  (listed above)" if self.invalid else ""),
            f"  merged    {self.distinct_texts - self.entries:>{width}}  of {self.distinct_texts} distinct strategy texts "
            f"into another entry (TF-IDF cosine >= {self.merge_threshold:g})",
        ]
        return "\n".join(lines)


@dataclass
class _Row:
    source: str
    row: int
    problem_id: str
    problem: str
    answer: str | None
    text: str
    strategy_json: str
    score: float | None
    provenance: dict[str, Any]


def _check_row(row: dict[str, Any], i: int, name: str, cfg: BuildConfig) -> tuple[str, _Row | None]:
    """("ok", row) for a usable row, (status or reason, None) for one that is skipped; raises
    `DataError` naming the field for a row that fails the checks."""
    cols = cfg.columns
    if row.get("strategy_source") == "retrieved":  # `sgpo library retrieve` output: not extracted for this problem
        return "retrieved (not extracted)", None
    status = row.get("status", "ok")
    if status != "ok":
        return f"{status}: {row.get('reason')}" if row.get("reason") else str(status), None
    strategy = row.get(cols.strategy)
    if strategy is None or (isinstance(strategy, str) and not strategy.strip()):
        return "no_strategy", None
    problem = row.get(cols.problem)
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(f"field {cols.problem!r}: " + ("missing" if cols.problem not in row else "must be a non-empty string"))
    raw_id = row.get(cols.id)
    if raw_id is not None and text_value(raw_id) is None:
        raise DataError(f"field {cols.id!r}: must be a string or number, got a {type(raw_id).__name__}")
    if cfg.strategy_json_column not in row:
        raise DataError(f"field {cfg.strategy_json_column!r}: missing (the strategy as JSON, written by `sgpo extract`)")
    try:
        parsed = parse_strategy_json(row[cfg.strategy_json_column])
    except ExtractionError as exc:
        raise DataError(f"field {cfg.strategy_json_column!r}: not a valid strategy ({exc.detail})") from None
    text = render_strategy(parsed)
    if not isinstance(strategy, str) or strategy.strip() != text:
        raise DataError(f"field {cols.strategy!r}: is not the rendering of {cfg.strategy_json_column!r}")
    score = row.get(cfg.score_column)
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise DataError(f"field {cfg.score_column!r}: must be a number, got a {type(score).__name__}")
    answer = text_value(row.get(cols.answer))
    return "ok", _Row(
        source=name,
        row=i,
        problem_id=text_value(raw_id) if raw_id is not None else f"{name}:{i}",
        problem=problem.strip(),
        answer=answer,
        text=text,
        strategy_json=parsed.model_dump_json(),
        score=None if score is None else float(score),
        provenance={"source": name, "row": i, **{c: row.get(c) for c in PROVENANCE_COLUMNS if c in row}},
    )


def read_strategy_rows(sources: Sequence[Any], cfg: BuildConfig) -> tuple[list[_Row], Counter, list[str], int, list[str]]:
    """(usable rows, skipped counts, invalid-row messages, number of rows, source names). Raises
    `DataError` listing the invalid rows unless `skip_invalid`."""
    used: list[_Row] = []
    skipped: Counter = Counter()
    invalid: list[str] = []
    names: list[str] = []
    total = 0
    problem_of_id: dict[str, tuple[str, str]] = {}  # id -> (problem text, "file row")
    for source in sources:
        rows, name = load_rows(source)
        names.append(name)
        total += len(rows)
        for i, row in enumerate(rows):
            where = f"{name}: row {i}" + (f" (id {row[cfg.columns.id]!r})" if cfg.columns.id in row else "")
            try:
                outcome, good = _check_row(row, i, name, cfg)
                if good is not None:
                    first = problem_of_id.setdefault(good.problem_id, (good.problem, f"{name} row {i}"))
                    if first[0] != good.problem:
                        raise DataError(
                            f"field {cfg.columns.id!r}: duplicate problem id {good.problem_id!r} names another problem (first in {first[1]})"
                        )
            except DataError as exc:
                invalid.append(f"{where}: {exc}")
                continue
            if good is None:
                skipped[outcome] += 1
            else:
                used.append(good)
    if invalid and not cfg.skip_invalid:
        raise DataError(
            f"{len(invalid)} invalid row(s) (fix them, or pass --skip-invalid to build without them):" + listing(invalid)
        )
    return used, skipped, invalid, total, names


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _cluster_entry(variants: list[str], by_text: dict[str, list[_Row]], canonical_id: dict[str, str], names: list[str]) -> Entry:
    """The entry of one cluster of rendered strategy texts: its best variant (the highest mean score,
    then the most rows, then the first) with every row of the cluster as provenance."""

    def rank(t: str) -> tuple:
        score = _mean([r.score for r in by_text[t] if r.score is not None])
        return (score is not None, score if score is not None else 0.0, len(by_text[t]), -variants.index(t))

    best = max(variants, key=rank)
    member_rows = [r for t in variants for r in by_text[t]]
    scored = [r.score for r in by_text[best] if r.score is not None]
    return Entry(
        id="s" + hashlib.sha256(best.encode("utf-8")).hexdigest()[:12],
        strategy=best,
        strategy_json=by_text[best][0].strategy_json,
        problems=list(dict.fromkeys(canonical_id[r.problem] for r in member_rows)),
        num_rows=len(member_rows),
        score=_mean(scored),
        num_scored=len(scored),
        merged_variants=[t for t in variants if t != best],
        provenance=[r.provenance for r in sorted(member_rows, key=lambda r: (names.index(r.source), r.row))],
    )


def build_entries(
    sources: Sequence[Any], config: BuildConfig = BuildConfig()
) -> tuple[list[Entry], list[LibraryProblem], dict[str, Any], BuildSummary]:
    """A library's entries, problems and manifest (not yet saved: `StrategyLibrary.build`) and the
    build summary. Raises `DataError` for invalid rows (unless `skip_invalid`) and `LibraryError`
    when no row is usable (an empty library)."""
    if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence) or not sources:
        raise ValueError("sources must be a non-empty list of inputs")
    rows, skipped, invalid, total, names = read_strategy_rows(sources, config)
    if not rows:
        counts = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "no rows"
        raise LibraryError(
            f"no usable strategy in {', '.join(names)} ({total} rows: {counts}; invalid {len(invalid)}): the library would be empty"
        )

    by_text: dict[str, list[_Row]] = {}
    canonical_id: dict[str, str] = {}  # problem text -> its first id (a problem given two ids is one problem)
    for r in rows:
        canonical_id.setdefault(r.problem, r.problem_id)
        by_text.setdefault(r.text, []).append(r)
    texts = list(by_text)
    clusters = leader_clusters(texts, config.merge_threshold)
    members: dict[int, list[str]] = {}
    for text, c in zip(texts, clusters):
        members.setdefault(c, []).append(text)

    entries: list[Entry] = []
    entry_of_text: dict[str, str] = {}
    for c in sorted(members):
        entries.append(_cluster_entry(members[c], by_text, canonical_id, names))
        for t in members[c]:
            entry_of_text[t] = entries[-1].id
    order = {e.id: (-(e.score if e.score is not None else float("-inf")), -len(e.problems), i) for i, e in enumerate(entries)}

    problems: dict[str, LibraryProblem] = {}
    for r in rows:
        p = problems.setdefault(r.problem, LibraryProblem(canonical_id[r.problem], r.problem, r.answer, []))
        eid = entry_of_text[r.text]
        if eid not in p.entries:
            p.entries.append(eid)
    for p in problems.values():
        p.entries.sort(key=order.__getitem__)

    summary = BuildSummary(
        inputs=names,
        rows=total,
        used=len(rows),
        skipped=dict(skipped),
        invalid=invalid,
        distinct_texts=len(texts),
        entries=len(entries),
        problems=len(problems),
        merge_threshold=config.merge_threshold,
    )
    manifest = {
        "format": FORMAT,
        "strategy_schema": 1,
        "merge": {"method": "tfidf-cosine", "text": "strategy", "threshold": config.merge_threshold, "vectorizer": VECTORIZER},
        "retrieval": {"method": "tfidf-cosine", "text": "problem", "vectorizer": VECTORIZER},
        "build": {k: v for k, v in summary.to_dict().items() if k not in ("invalid", "output")} | {"invalid": len(invalid)},
    }
    return entries, list(problems.values()), manifest, summary
