"""The extraction run: input rows -> extractor -> leak filter -> result cache -> output file.

`extract_strategies(input, output, extractor, config)` reads a JSONL / JSON / parquet file, a
`datasets.Dataset` or a list of dicts with `problem` and `response` (optional `answer`, `id`), and
writes exactly one output row per input row, in input order: the input columns plus

    status          "ok" | "rejected" | "failed"
    reason          why it was rejected / failed (None when ok)
    detail          a human-readable explanation (None when ok)
    strategy        the rendered strategy block for the guided prompt (None unless ok)
    strategy_json   the strategy as JSON (schema v1); kept for rejected rows too, for inspection
    extractor, extractor_model, prompt_version, content_hash     provenance

Items are processed by a pool of `concurrency` threads. Each finished item is committed to the
SQLite result cache (`ResultStore`) under its content hash (problem, response, answer, extractor,
model, prompt version), so a rerun skips what is done, `kill -9` loses at most the items in flight,
and rows with identical content are extracted once. Failures are recorded per item and never stop the
run; transient ones (rate limits, timeouts, 5xx, connection errors) are retried on the next run, the
others only with `retry_failed=True`. The output file is written at the end, atomically. Before the
first request the extractor is probed once (`Extractor.probe`), so an endpoint where nothing listens
stops the run with one error instead of failing every item after its retries.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import DataError, load_rows, write_rows
from sgpo.strategies.base import ExtractionError, ExtractionRequest, Extractor, ExtractorConfigError, Strategy, render_strategy
from sgpo.strategies.leak import LeakConfig, LeakFilter
from sgpo.strategies.registry import build_extractor
from sgpo.strategies.run_progress import RunProgress, format_duration
from sgpo.strategies.store import ResultStore, content_hash

OUTPUT_SUFFIXES = (".jsonl", ".parquet", ".json")
STATUS_COLUMNS = ("status", "reason", "detail", "strategy", "strategy_json")
PROVENANCE_COLUMNS = ("extractor", "extractor_model", "prompt_version", "content_hash")
#: failure reasons worth retrying on a later run without being asked to
TRANSIENT_REASONS = frozenset({"rate_limited", "server_error", "timeout", "connection_error", "http_408", "http_409"})


@dataclass(frozen=True)
class InputColumns:
    """Which input column holds each field."""

    problem: str = "problem"
    response: str = "response"
    answer: str = "answer"
    id: str = "id"


@dataclass(frozen=True)
class ExtractionConfig:
    """How a run reads its input and drives the extractor: `concurrency` requests in flight,
    `batch_size` items per extractor call (None: the extractor's own), the leak filter's settings,
    the input's `columns`, `retry_failed` (also redo items that failed for non-transient reasons)
    and `limit` (only the first N input rows)."""

    concurrency: int = 8
    batch_size: int | None = None
    leak: LeakConfig = LeakConfig()
    columns: InputColumns = InputColumns()
    retry_failed: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")


@dataclass
class ExtractionSummary:
    """What a run did. `ok + sum(rejected) + sum(failed) == rows`."""

    input: str
    output: str
    cache: str
    rows: int
    unique_items: int
    from_cache: int
    processed: int
    ok: int
    rejected: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    items_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        def by_reason(counts: dict[str, int]) -> str:
            return f"  ({', '.join(f'{k} {v}' for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))})" if counts else ""

        width = len(str(self.rows))
        return "\n".join(
            [
                f"extracted {self.rows} rows ({self.unique_items} unique items: {self.from_cache} from the cache, "
                f"{self.processed} processed in {format_duration(self.elapsed_s)}, {self.items_per_s:.1f} items/s)",
                f"  ok        {self.ok:>{width}}",
                f"  rejected  {sum(self.rejected.values()):>{width}}{by_reason(self.rejected)}",
                f"  failed    {sum(self.failed.values()):>{width}}{by_reason(self.failed)}",
                f"output: {self.output}   cache: {self.cache}",
            ]
        )


# ---------------------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


def read_items(
    source: Any, columns: InputColumns = InputColumns(), limit: int | None = None
) -> tuple[list[dict[str, Any]], list[ExtractionRequest], str]:
    """Input rows, the extraction request of each, and the source's name. Raises `DataError` naming
    the source, the rows and the columns of every bad row (up to 10 listed)."""
    rows, name = load_rows(source)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DataError(f"{name}: no rows to extract from")
    errors: list[str] = []
    requests: list[ExtractionRequest] = []
    for i, row in enumerate(rows):
        where = f"row {i}" + (f" (id {row[columns.id]!r})" if columns.id in row else "")
        texts = {}
        for col in (columns.problem, columns.response):
            if col not in row:
                errors.append(f"{where}: missing column {col!r} (columns found: {', '.join(sorted(row)) or 'none'})")
            elif not isinstance(row[col], str) or not row[col].strip():
                kind = "empty" if row[col] in (None, "") else f"a {type(row[col]).__name__}"
                errors.append(f"{where}: column {col!r} must be a non-empty string, got {kind}")
            else:
                texts[col] = row[col]
        answer = row.get(columns.answer)
        if answer is not None and _text(answer) is None:
            errors.append(f"{where}: column {columns.answer!r} must be a string or a number, got a {type(answer).__name__}")
        if len(texts) == 2:
            requests.append(ExtractionRequest(texts[columns.problem], texts[columns.response], _text(answer)))
    if errors:
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(f"{name}: {len(errors)} bad row(s):\n  " + "\n  ".join(errors[:10]) + more)
    return rows, requests, name


def item_key(request: ExtractionRequest, provenance: dict[str, Any]) -> str:
    """The content hash of one item: input content and everything about the extractor that matters."""
    return content_hash(request.problem, request.response, request.answer, provenance)


def _failure(err: ExtractionError) -> dict[str, Any]:
    return {"status": "failed", "reason": err.reason, "detail": err.detail or None, "strategy_json": None}


def _apply_leak(record: dict[str, Any], request: ExtractionRequest, leak: LeakFilter) -> dict[str, Any]:
    record = dict(record)
    record["leak_config"] = leak.config.fingerprint()
    record["leak_reason"] = record["leak_detail"] = None
    if record["status"] == "ok":
        found = leak.check(
            Strategy.model_validate_json(record["strategy_json"]), request.problem, request.response, request.answer
        )
        if found is not None:
            record["leak_reason"], record["leak_detail"] = found.reason, found.detail
    return record


def _run_batch(extractor: Extractor, leak: LeakFilter, batch: list[tuple[str, ExtractionRequest]]) -> dict[str, dict[str, Any]]:
    """Runs in a worker thread: extract, then leak-check, one record per item."""
    start = time.monotonic()
    requests = [req for _, req in batch]
    try:
        results: list[Any] = extractor.extract_batch(requests)
        if len(results) != len(batch):
            raise RuntimeError(f"extract_batch returned {len(results)} results for {len(batch)} items")
    except (ExtractorConfigError, KeyboardInterrupt):
        raise
    except ExtractionError as exc:
        results = [exc] * len(batch)
    except Exception as exc:  # noqa: BLE001 - a bug or an odd reply in one item must not end a 46k-item run
        results = [ExtractionError("extractor_error", f"{type(exc).__name__}: {exc}")] * len(batch)
    seconds = (time.monotonic() - start) / max(1, len(batch))
    out: dict[str, dict[str, Any]] = {}
    for (key, req), result in zip(batch, results):
        if isinstance(result, Strategy):
            record = {"status": "ok", "reason": None, "detail": None, "strategy_json": result.model_dump_json()}
        elif isinstance(result, ExtractionError):
            record = _failure(result)
        else:
            record = _failure(ExtractionError("extractor_error", f"extractor returned a {type(result).__name__}, not a Strategy"))
        try:
            record = _apply_leak(record, req, leak)
        except Exception as exc:  # noqa: BLE001
            record = _apply_leak(_failure(ExtractionError("leak_check_error", f"{type(exc).__name__}: {exc}")), req, leak)
        record["seconds"] = round(seconds, 4)
        out[key] = record
    return out


def final_status(record: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(status, reason, detail) of a stored record."""
    if record["status"] != "ok":
        return "failed", record.get("reason"), record.get("detail")
    if record.get("leak_reason"):
        return "rejected", record["leak_reason"], record.get("leak_detail")
    return "ok", None, None


def output_row(row: dict[str, Any], record: dict[str, Any], provenance: dict[str, Any], key: str) -> dict[str, Any]:
    status, reason, detail = final_status(record)
    strategy_json = record.get("strategy_json")
    strategy = render_strategy(Strategy.model_validate_json(strategy_json)) if status == "ok" else None
    out = dict(row)
    out.update(status=status, reason=reason, detail=detail, strategy=strategy, strategy_json=strategy_json)
    out.update({k: provenance.get(k) for k in PROVENANCE_COLUMNS if k != "content_hash"})
    out["content_hash"] = key
    return out


def default_cache_path(output: str | os.PathLike) -> Path:
    return Path(str(output) + ".cache.sqlite")


# ---------------------------------------------------------------------------------------------------
def _cached_results(store: ResultStore, unique: dict[str, ExtractionRequest], leak_filter: LeakFilter) -> dict[str, dict]:
    """The cache's results of the `unique` items; those checked with another leak configuration are
    re-filtered (and stored again), no request needed."""
    stored = store.get_many(unique)
    fingerprint = leak_filter.config.fingerprint()
    refiltered = {k: _apply_leak(r, unique[k], leak_filter) for k, r in stored.items() if r.get("leak_config") != fingerprint}
    store.put_many(refiltered)
    stored.update(refiltered)
    return stored


def _needs_work(rec: dict | None, retry_failed: bool) -> bool:
    """An item is (re)done when it has no result, or failed transiently (or at all, with `retry_failed`)."""
    if rec is None:
        return True
    return rec["status"] == "failed" and (retry_failed or rec.get("reason") in TRANSIENT_REASONS)


def extract_strategies(
    input: Any,
    output: str | os.PathLike,
    extractor: Extractor | str,
    config: ExtractionConfig = ExtractionConfig(),
    *,
    extractor_options: dict[str, Any] | None = None,
    strict_extractor_options: dict[str, Any] | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> ExtractionSummary:
    """Extract a strategy for every input row and write the output file; returns the summary.

    `extractor` is an `Extractor` instance, or a backend name / `module:Class` import path built with
    `extractor_options` (those its constructor does not take are dropped) and `strict_extractor_options`
    (all must be taken), see `sgpo.strategies.registry`. Raises `DataError` for bad input (before any
    request is made) and `ExtractorConfigError` when the extractor cannot work at all — its probe
    fails, or a reply says so (the items done so far stay in the cache; no output is written).
    """
    output = Path(output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"{output}: output must end in {', '.join(OUTPUT_SUFFIXES)}")
    rows, requests, source_name = read_items(input, config.columns, config.limit)

    owns_extractor = isinstance(extractor, str)
    if isinstance(extractor, str):
        extractor = build_extractor(extractor, strict_extractor_options, **(extractor_options or {}))
    leak_filter = LeakFilter(config.leak)
    cache_path = Path(cache) if cache is not None else default_cache_path(output)
    store = ResultStore(cache_path)
    try:
        provenance = extractor.provenance()
        keys = [item_key(req, provenance) for req in requests]
        unique: dict[str, ExtractionRequest] = {}
        for key, req in zip(keys, requests):
            unique.setdefault(key, req)
        stored = _cached_results(store, unique, leak_filter)
        todo = [k for k in unique if _needs_work(stored.get(k), config.retry_failed)]
        if todo:
            extractor.probe()
        workers = max(1, min(config.concurrency, extractor.max_concurrency or config.concurrency))
        size = max(1, config.batch_size or extractor.batch_size or 1)
        batches = [[(k, unique[k]) for k in todo[i : i + size]] for i in range(0, len(todo), size)]
        bar = RunProgress(len(todo), enabled=progress)
        start = time.monotonic()
        try:
            _drive(extractor, leak_filter, batches, workers, store, stored, bar)
        finally:
            bar.close()
        elapsed = time.monotonic() - start

        out_rows = [output_row(row, stored[key], provenance, key) for row, key in zip(rows, keys)]
        write_rows(output, out_rows)
        counts = Counter((r["status"], r["reason"]) for r in out_rows)
        return ExtractionSummary(
            input=source_name,
            output=str(output),
            cache=str(cache_path),
            rows=len(out_rows),
            unique_items=len(unique),
            from_cache=len(unique) - len(todo),
            processed=len(todo),
            ok=counts[("ok", None)],
            rejected={reason: n for (status, reason), n in counts.items() if status == "rejected"},
            failed={reason: n for (status, reason), n in counts.items() if status == "failed"},
            elapsed_s=round(elapsed, 3),
            items_per_s=round(len(todo) / elapsed, 2) if elapsed > 0 and todo else 0.0,
        )
    finally:
        store.close()
        leak_filter.close()
        if owns_extractor:
            extractor.close()


def _drive(
    extractor: Extractor,
    leak: LeakFilter,
    batches: Sequence[list[tuple[str, ExtractionRequest]]],
    workers: int,
    store: ResultStore,
    stored: dict[str, dict[str, Any]],
    bar: RunProgress,
) -> None:
    """Keeps at most `2 * workers` batches submitted; commits finished items from this thread, all
    those that finished together in one transaction."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="extract")
    pending = iter(batches)
    inflight: set[Future] = set()
    clean = False
    try:
        while True:
            while len(inflight) < 2 * workers:
                batch = next(pending, None)
                if batch is None:
                    break
                inflight.add(pool.submit(_run_batch, extractor, leak, batch))
            if not inflight:
                break
            done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            records: dict[str, dict[str, Any]] = {}
            try:
                for fut in done:
                    records.update(fut.result())  # ExtractorConfigError propagates and stops the run
            finally:
                # one fsynced commit for everything that finished together (group commit)
                store.put_many(records)
                stored.update(records)
            for rec in records.values():
                bar.advance(final_status(rec)[0])
        clean = True
    finally:
        if clean:
            pool.shutdown(wait=True)
        else:
            for fut in inflight:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            print(
                f"extraction stopped; {len(stored)} finished items are kept in {store.path} and a rerun resumes from there",
                file=sys.stderr,
            )
