"""Retrieval: strategies for problems from the most similar problems of a library.

For each target problem, the library's problems are ranked by TF-IDF cosine with it
(`similarity`); walking down that ranking (similarity >= `min_similarity` only), the entries of each
library problem are candidates, each entry once. Every candidate goes through the leak filter
(`sgpo.strategies.leak.LeakFilter`) against the TARGET problem's gold answer: a strategy written for
another problem may hold a number that happens to be this one's answer. A leaking candidate is
skipped for the next one and counted. The first `k` clean candidates are listed; the first of them
(the most similar) becomes the problem's `strategy`, or, with re-ranking (`RerankConfig`), the one
with the highest guided - autonomous accuracy of a policy on the target problem, measured by
`sgpo.strategies.scoring.score_strategies` (ties: the more similar one).

Which rows get a strategy: with `only_missing`, rows that already have one keep it
(`strategy_source = "own"`) and the others are retrieved for; without it, every row is retrieved
for, and a row's own strategy moves to `own_strategy` (to compare retrieved with own strategies).

Output: the input rows, in order, with

    strategy               the strategy the row trains with (own, retrieved, or None)
    strategy_json          that strategy as JSON (schema v1): the entry's when retrieved
    strategy_source        "own" | "retrieved" | None (no strategy)
    strategy_similarity    cosine of the problem with the library problem that led to the entry
    strategy_entry         the library entry id;   strategy_match: that library problem's id
    own_strategy           the input's strategy (None when it had none)
    retrieval_outcome      own | retrieved | no_match | all_leaked
    retrieval_leaks        candidates skipped because they leak this problem's answer
    retrieval_candidates   the clean candidates: [{"entry", "similarity", "score"}], score from re-ranking
    rerank_score, rerank_guided_accuracy, rerank_auto_accuracy   (re-ranking only)
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sgpo.data import ColumnMap, DataError, load_rows, read_rows
from sgpo.library.format import Entry, LibraryProblem, listing, text_value
from sgpo.library.similarity import VECTORIZER, cosine_blocks, fit_vectorizer
from sgpo.prompts import PromptFormat
from sgpo.sampling import SamplingConfig
from sgpo.strategies.leak import LeakConfig, LeakFilter
from sgpo.strategies.scoring import ScoringConfig, score_strategies

OUTCOMES = ("own", "retrieved", "no_match", "all_leaked")


@dataclass(frozen=True)
class RetrievalConfig:
    """How strategies are retrieved for problems."""

    #: clean (non-leaking) candidates gathered per problem: the first is used, all are listed in
    #: `retrieval_candidates`, and re-ranking chooses among them
    k: int = 3
    #: TF-IDF cosine between problems below which a library problem is not similar enough: a problem
    #: with no library problem at or above it gets no strategy (outcome `no_match`)
    min_similarity: float = 0.2
    #: retrieve only for rows without a strategy of their own (they keep it); else for every row
    only_missing: bool = False
    #: input columns holding the problem, gold answer, strategy and row id
    columns: ColumnMap = field(default_factory=ColumnMap)
    #: the leak filter run on every candidate against the target's gold answer
    leak: LeakConfig = field(default_factory=LeakConfig)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in [0, 1], got {self.min_similarity}")


@dataclass(frozen=True)
class RerankConfig:
    """Re-ranking the candidates by guided - autonomous accuracy of a policy (`score_strategies`)."""

    #: the policy: a folder / hub id, or a loaded model (then `tokenizer` too)
    model: Any
    #: the tokenizer of a loaded model (None: loaded from the model path)
    tokenizer: Any = None
    #: rollouts per prompt, guided (each candidate) and autonomous
    rollouts: int = 8
    #: completion length limit
    max_new_tokens: int = 512
    #: sampling temperature, 0 = greedy
    temperature: float = 1.0
    #: sampling seed
    seed: int = 0
    #: prompts per generate call (None: all prompts of one problem)
    batch_size: int | None = None
    #: how problems and strategies become prompts (use the policy's own format)
    prompt_format: PromptFormat = field(default_factory=PromptFormat)
    #: torch device of the policy (None: where it is)
    device: str | None = None
    #: rollout cache (SQLite) that makes a rerun free; None: a temporary one
    cache: str | os.PathLike | None = None


@dataclass
class RetrievalSummary:
    """What a retrieval did: `sum(outcomes) == problems`."""

    input: str
    library_entries: int
    library_problems: int
    problems: int
    outcomes: dict[str, int]
    leaks_skipped: int
    mean_similarity: float | None
    min_similarity: float
    reranked: int = 0
    rollouts: int = 0
    elapsed_s: float = 0.0
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        o = self.outcomes
        width = len(str(self.problems))
        sim = "n/a" if self.mean_similarity is None else f"{self.mean_similarity:.3f}"
        lines = [
            f"retrieval for {self.problems} problems from a library of {self.library_entries} entries "
            f"({self.library_problems} problems), {self.elapsed_s:.1f}s",
            f"  own          {o.get('own', 0):>{width}}  kept their own strategy",
            f"  retrieved    {o.get('retrieved', 0):>{width}}  mean similarity {sim}"
            + (f", {self.reranked} re-ranked by the policy ({self.rollouts} rollouts)" if self.reranked else ""),
            f"  no_match     {o.get('no_match', 0):>{width}}  no library problem at similarity >= {self.min_similarity:g}: no strategy",
            f"  all_leaked   {o.get('all_leaked', 0):>{width}}  every similar candidate holds the problem's answer: no strategy",
            f"  leaking candidates skipped: {self.leaks_skipped}",
        ]
        if self.output:
            lines.append(f"output: {self.output}")
        return "\n".join(lines)


@dataclass
class RetrievalResult:
    rows: list[dict[str, Any]]
    summary: RetrievalSummary


@dataclass
class _Candidate:
    entry: str
    similarity: float
    match: str  # library problem id
    score: float | None = None


def _own_strategy(row: dict[str, Any], col: str) -> str | None:
    s = row.get(col)
    return s if isinstance(s, str) and s.strip() else None


def check_problems(rows: list[dict[str, Any]], name: str, columns: ColumnMap) -> None:
    """Raises `DataError` listing every bad row (file, row, field): a missing / empty problem or gold
    answer (the leak filter needs it), a strategy that is not text, a duplicate id."""
    if not rows:
        raise DataError(f"{name}: no problems (0 rows)")
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        where = f"row {i}" + (f" (id {row[columns.id]!r})" if columns.id in row else "")
        problem = row.get(columns.problem)
        if not isinstance(problem, str) or not problem.strip():
            errors.append(
                f"{where}: field {columns.problem!r} "
                + ("is missing" if columns.problem not in row else "must be a non-empty string")
            )
        answer = text_value(row.get(columns.answer))
        if answer is None or not answer.strip():
            errors.append(
                f"{where}: field {columns.answer!r} "
                + ("is missing" if columns.answer not in row else "must be a non-empty string or number")
                + " (the leak filter checks retrieved strategies against it)"
            )
        strategy = row.get(columns.strategy)
        if strategy is not None and not isinstance(strategy, str):
            errors.append(f"{where}: field {columns.strategy!r} must be text or null, got a {type(strategy).__name__}")
        if columns.id in row:
            rid = text_value(row[columns.id])
            if rid is None:
                errors.append(f"{where}: field {columns.id!r} must be a string or number")
            elif rid in seen:
                errors.append(f"{where}: field {columns.id!r}: duplicate problem id {rid!r} (first in row {seen[rid]})")
            else:
                seen[rid] = i
    if errors:
        raise DataError(f"{name}: {len(errors)} bad row(s):" + listing(errors))


def rank_candidates(
    entries: Sequence[Entry],
    library_problems: Sequence[LibraryProblem],
    manifest: Mapping[str, Any],
    targets: list[dict[str, Any]],
    config: RetrievalConfig,
    leak: LeakFilter,
) -> list[tuple[list[_Candidate], int]]:
    """For each target row: its clean candidates (at most `k`, most similar first) and the number
    of leaking candidates skipped on the way, from a library's `entries`, `library_problems` and
    `manifest` (its TF-IDF settings)."""
    if not targets:  # every row keeps its own strategy (only_missing): nothing to rank
        return []
    cols = config.columns
    settings = manifest.get("retrieval", {}).get("vectorizer", VECTORIZER)
    vectorizer = fit_vectorizer([p.problem for p in library_problems], settings)
    keys = vectorizer.transform([p.problem for p in library_problems])
    queries = vectorizer.transform([str(t[cols.problem]) for t in targets])
    parsed = {e.id: e.parsed() for e in entries}
    out: list[tuple[list[_Candidate], int]] = []
    for start, sims in cosine_blocks(queries, keys, block=256):
        for i in range(sims.shape[0]):
            target = targets[start + i]
            row = sims[i]
            similar = np.nonzero(row >= config.min_similarity - 1e-12)[0]
            order = similar[np.argsort(-row[similar], kind="stable")]
            seen: set[str] = set()
            found: list[_Candidate] = []
            leaks = 0
            for j in order:
                problem = library_problems[j]
                for eid in problem.entries:
                    if eid in seen:
                        continue
                    seen.add(eid)
                    if leak.check(parsed[eid], str(target[cols.problem]), None, text_value(target[cols.answer])) is not None:
                        leaks += 1
                        continue
                    found.append(_Candidate(eid, round(float(row[j]), 6), problem.problem_id))
                    if len(found) == config.k:
                        break
                if len(found) == config.k:
                    break
            out.append((found, leaks))
    return out


def rerank(
    entries: Mapping[str, Entry],
    targets: list[dict[str, Any]],
    candidates: list[list[_Candidate]],
    config: RetrievalConfig,
    rerank_config: RerankConfig,
    progress: bool,
) -> tuple[list[int], list[dict[str, Any] | None], int]:
    """Score the candidates of every target with two or more (guided - autonomous accuracy of the
    policy on the target problem) through `score_strategies`; sets each candidate's `score`.
    Returns the chosen candidate index of every target, the scores of the chosen one (None when not
    re-ranked) and the number of rollouts sampled. `entries`: the library's entries by id."""
    cols = config.columns
    rows = [
        {
            "rerank_group": t,
            "problem": str(targets[t][cols.problem]),
            "answer": text_value(targets[t][cols.answer]),
            "strategy": entries[c.entry].strategy,
            "status": "ok",
            "entry": c.entry,
        }
        for t, cands in enumerate(candidates)
        if len(cands) > 1
        for c in cands
    ]
    chosen = [0] * len(targets)
    scores: list[dict[str, Any] | None] = [None] * len(targets)
    if not rows:
        return chosen, scores, 0
    with tempfile.TemporaryDirectory(prefix="sgpo-rerank-") as tmp:
        summary = score_strategies(
            input=rows,
            output=Path(tmp) / "best.jsonl",
            model=rerank_config.model,
            tokenizer=rerank_config.tokenizer,
            config=ScoringConfig(
                sampling=SamplingConfig(
                    k=rerank_config.rollouts,
                    temperature=rerank_config.temperature,
                    max_new_tokens=rerank_config.max_new_tokens,
                    seed=rerank_config.seed,
                ),
                max_candidates=config.k,
                batch_size=rerank_config.batch_size,
                prompt_format=rerank_config.prompt_format,
                group_by="rerank_group",
            ),
            cache=rerank_config.cache or Path(tmp) / "cache.sqlite",
            candidates_output=Path(tmp) / "all.jsonl",
            device=rerank_config.device,
            progress=progress,
        )
        for r in read_rows(Path(tmp) / "all.jsonl"):
            t = r["rerank_group"]
            index = next(i for i, c in enumerate(candidates[t]) if c.entry == r["entry"])
            candidates[t][index].score = r["strategy_score"]
            if r["chosen"]:
                chosen[t] = index
                scores[t] = {
                    "rerank_score": r["strategy_score"],
                    "rerank_guided_accuracy": r["guided_accuracy"],
                    "rerank_auto_accuracy": r["auto_accuracy"],
                }
    return chosen, scores, summary.rollouts


def _own_rows(rows: list[dict[str, Any]], cols: ColumnMap) -> list[dict[str, Any]]:
    """Every input row with the retrieval columns as if nothing were retrieved: its own strategy, if any."""
    out = []
    for i, row in enumerate(rows):
        own = _own_strategy(row, cols.strategy)
        own_json = row.get("strategy_json") if own else None
        out.append(
            {
                **row,
                cols.strategy: own,
                "strategy_json": own_json,
                "strategy_source": "own" if own else None,
                "strategy_similarity": None,
                "strategy_entry": None,
                "strategy_match": None,
                "own_strategy": own,
                "retrieval_outcome": "own" if own else "no_match",
                "retrieval_leaks": 0,
                "retrieval_candidates": [],
            }
        )
    return out


def _fill_retrieved(rec: dict[str, Any], cands: list[_Candidate], leaks: int, chosen: int, scores: dict[str, Any] | None,
                    reranked: bool, by_id: Mapping[str, Entry], cols: ColumnMap) -> float | None:  # fmt: skip
    """Set the retrieval columns of output row `rec` from its candidates (`chosen` the index of the one
    used); returns the similarity of the one used (None: no clean candidate)."""
    rec.update(retrieval_leaks=leaks, retrieval_candidates=[asdict(c) for c in cands])
    if reranked:
        rec.update(scores or {"rerank_score": None, "rerank_guided_accuracy": None, "rerank_auto_accuracy": None})
    if not cands:
        rec.update(
            {
                cols.strategy: None,
                "strategy_json": None,
                "strategy_source": None,
                "retrieval_outcome": "all_leaked" if leaks else "no_match",
            }
        )
        return None
    best = cands[chosen]
    entry = by_id[best.entry]
    rec.update(
        {
            cols.strategy: entry.strategy,
            "strategy_json": entry.strategy_json,
            "strategy_source": "retrieved",
            "strategy_similarity": best.similarity,
            "strategy_entry": best.entry,
            "strategy_match": best.match,
            "retrieval_outcome": "retrieved",
        }
    )
    return best.similarity


def retrieve_rows(
    entries: Sequence[Entry],
    library_problems: Sequence[LibraryProblem],
    manifest: Mapping[str, Any],
    problems: Any,
    config: RetrievalConfig = RetrievalConfig(),
    rerank_config: RerankConfig | None = None,
    progress: bool = True,
) -> RetrievalResult:
    """Output rows (one per row of `problems`, in order) and the summary, from a library's `entries`,
    `library_problems` and `manifest` (`StrategyLibrary.retrieve`); see the module docstring."""
    start = time.monotonic()
    by_id = {e.id: e for e in entries}
    cols = config.columns
    rows, name = load_rows(problems)
    check_problems(rows, name, cols)
    targets = [i for i, r in enumerate(rows) if not (config.only_missing and _own_strategy(r, cols.strategy))]
    with LeakFilter(config.leak) as leak:
        ranked = rank_candidates(entries, library_problems, manifest, [rows[i] for i in targets], config, leak)
    candidates = [c for c, _ in ranked]
    if rerank_config is not None:
        chosen, scores, rollouts = rerank(by_id, [rows[i] for i in targets], candidates, config, rerank_config, progress)
    else:
        chosen, scores, rollouts = [0] * len(targets), [None] * len(targets), 0

    out = _own_rows(rows, cols)
    similarities = []
    for t, i in enumerate(targets):
        cands, leaks = ranked[t]
        similarity = _fill_retrieved(out[i], cands, leaks, chosen[t], scores[t], rerank_config is not None, by_id, cols)
        if similarity is not None:
            similarities.append(similarity)
    outcomes = Counter(r["retrieval_outcome"] for r in out)
    summary = RetrievalSummary(
        input=name,
        library_entries=len(entries),
        library_problems=len(library_problems),
        problems=len(rows),
        outcomes={o: outcomes.get(o, 0) for o in OUTCOMES},
        leaks_skipped=sum(leaks for _, leaks in ranked),
        mean_similarity=round(sum(similarities) / len(similarities), 6) if similarities else None,
        min_similarity=config.min_similarity,
        reranked=sum(1 for s in scores if s is not None),
        rollouts=rollouts,
        elapsed_s=round(time.monotonic() - start, 3),
    )
    return RetrievalResult(out, summary)
