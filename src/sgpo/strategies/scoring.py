"""Scoring candidate strategies by what they do for a policy.

For each problem, the policy samples `k` autonomous completions (prompt `x`) and, for each candidate
strategy `s`, `k` guided completions (prompt `x ⊕ s`, the trainer's guided template). With the
verifier's accuracies

    score(s) = guided_accuracy(s) - autonomous_accuracy

the marginal benefit of the strategy, the same quantity SGPO's default instance weight uses. The best
of at most `max_candidates` candidates per problem is kept (ties: the earlier candidate). Output: one
row per problem (first appearance order), the chosen candidate's row plus `strategy_score`,
`guided_accuracy`, `auto_accuracy`, `num_candidates`; problems without a usable candidate keep
`strategy = None` (they still train with RL). With `min_score`, a best score below it also gives
`strategy = None`.

Rollout results are cached per (model, prompt format, sampling settings, problem, strategy) in a
`ResultStore`, so an interrupted scoring run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import ColumnMap, DataError, load_rows, write_rows
from sgpo.modeling import load_tokenizer
from sgpo.prompts import PromptFormat, tokenize_prompts
from sgpo.rollout import generate_completions
from sgpo.sampling import SamplingConfig
from sgpo.strategies.run_progress import RunProgress
from sgpo.strategies.store import ResultStore, content_hash
from sgpo.verify import Verifier


def strategy_score(guided_correct: Sequence[float], auto_correct: Sequence[float]) -> float:
    """mean(guided) - mean(autonomous) of per-completion rewards (booleans count 1 / 0)."""
    if not guided_correct or not auto_correct:
        raise ValueError("both rollout groups must be non-empty")
    return sum(map(float, guided_correct)) / len(guided_correct) - sum(map(float, auto_correct)) / len(auto_correct)


def best_index(scores: Sequence[float]) -> int:
    """Index of the highest score; the first one on ties."""
    if not scores:
        raise ValueError("no scores")
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


@dataclass(frozen=True)
class ScoringConfig:
    """Settings of a scoring run: the rollouts (`sampling`: k completions per prompt, temperature,
    top-p, token limit, seed), at most `max_candidates` candidates per problem, prompts per generate
    call (`batch_size`, None: all of one problem), the longest prompt allowed (`max_prompt_length`,
    never truncated), `min_score` below which a problem keeps no strategy, the prompt format, and the
    input's columns (`columns`; rows sharing the `group_by` column's value are one problem's
    candidates). The sampling settings and the prompt format are part of the rollout cache key."""

    sampling: SamplingConfig = SamplingConfig(k=8, temperature=1.0, seed=0)
    max_candidates: int = 4
    batch_size: int | None = None
    max_prompt_length: int | None = None
    min_score: float | None = None
    prompt_format: PromptFormat = PromptFormat()
    columns: ColumnMap = ColumnMap()
    group_by: str = "problem"

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")


@dataclass
class ScoringSummary:
    input: str
    output: str
    cache: str
    problems: int
    problems_with_candidates: int
    candidates_scored: int
    rollouts: int
    from_cache: int
    mean_auto_accuracy: float | None
    mean_best_score: float | None
    kept: int
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:+.3f}"

        rows, by = self.extra.get("input_rows", self.problems), self.extra.get("group_by", "id")
        merged = (
            f"{rows} input rows are {self.problems} problem(s): the rows of one problem (same {by}) are its candidate "
            "strategies, and it gets one output row\n"
            if rows > self.problems
            else ""
        )
        return merged + (
            f"scored {self.candidates_scored} candidate strategies of {self.problems_with_candidates}/{self.problems} problems "
            f"({self.rollouts} rollouts sampled, {self.from_cache} rollout groups from the cache, {self.elapsed_s:.1f}s)\n"
            f"  mean autonomous accuracy {f(self.mean_auto_accuracy)}   mean best score {f(self.mean_best_score)}   "
            f"strategies kept {self.kept}\n"
            f"output: {self.output}   cache: {self.cache}"
        )


@dataclass
class _Group:
    key: Any
    rows: list[int]
    problem: str
    answer: str
    candidates: list[int]  # row indices with a usable, distinct strategy (at most max_candidates)


def group_candidates(
    rows: list[dict[str, Any]], columns: ColumnMap, group_by: str, max_candidates: int, name: str
) -> list[_Group]:
    """Problems in first-appearance order with their candidate rows. Rows whose `status` is present and
    not "ok", or whose strategy is missing / empty, are not candidates. Raises `DataError` for rows
    without problem / answer and for a problem given two different answers."""
    groups: dict[Any, _Group] = {}
    for i, row in enumerate(rows):
        for col in (columns.problem, columns.answer, group_by):
            if col not in row or row[col] is None or (isinstance(row[col], str) and not row[col].strip()):
                raise DataError(f"{name}: row {i}: missing or empty column {col!r} (columns found: {', '.join(sorted(row))})")
        gkey = row[group_by]
        answer = str(row[columns.answer])
        g = groups.get(gkey)
        if g is None:
            g = groups[gkey] = _Group(gkey, [], str(row[columns.problem]), answer, [])
        elif answer != g.answer:
            raise DataError(
                f"{name}: row {i}: answer {answer!r} differs from {g.answer!r} given for the same problem in row {g.rows[0]}"
            )
        g.rows.append(i)
        strategy = row.get(columns.strategy)
        usable = isinstance(strategy, str) and strategy.strip() and row.get("status", "ok") == "ok"
        if usable and len(g.candidates) < max_candidates and all(rows[j][columns.strategy] != strategy for j in g.candidates):
            g.candidates.append(i)
    return list(groups.values())


def _model_id(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return str(getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__))


def _load_policy(model: Any, tokenizer: Any, device: str | None) -> tuple[Any, Any]:
    """(model, tokenizer) from a path / hub id or loaded objects; a tokenizer without a pad token pads with EOS."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        tokenizer = tokenizer or load_tokenizer(str(model))
        model = AutoModelForCausalLM.from_pretrained(str(model))
    if tokenizer is None:
        raise ValueError("a tokenizer is needed when the model is given as an object")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model = model.to(device)
    return model, tokenizer


def _sample_outcomes(
    g: _Group, missing: list[str | None], keys: dict[str | None, str], model, tokenizer, verifier, config: ScoringConfig
) -> dict[str, dict[str, Any]]:
    """{cache key: {"correct", "timed_out"}} of `sampling.k` rollouts of problem `g` with each strategy
    of `missing` (None: autonomous), seeded by the problem (and `sampling.seed`)."""
    import torch

    sampling, prompt_format = config.sampling, config.prompt_format
    texts = [prompt_format.render(tokenizer, g.problem, s) for s in missing for _ in range(sampling.k)]
    names = [f"{g.key!r}{' guided' if s else ' autonomous'}" for s in missing for _ in range(sampling.k)]
    ids = tokenize_prompts(
        tokenizer,
        texts,
        max_length=config.max_prompt_length,
        row_names=names,
        add_special_tokens=not prompt_format.applies_chat_template(tokenizer),
    )
    torch.manual_seed((int(keys[None][:8], 16) + (sampling.seed or 0)) % (2**31))
    gen = generate_completions(
        model,
        tokenizer,
        ids,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        batch_size=config.batch_size,
    )
    checks = verifier.check(gen.texts, [g.answer] * len(gen.texts))
    new = {}
    for j, s in enumerate(missing):
        part = checks[j * sampling.k : (j + 1) * sampling.k]
        new[keys[s]] = {"correct": [c.correct for c in part], "timed_out": sum(c.timed_out for c in part)}
    return new


def _outcomes(
    g: _Group, keys: dict[str | None, str], store: ResultStore, model, tokenizer, verifier, config: ScoringConfig
) -> tuple[dict[str, dict[str, Any]], int, int]:
    """(outcomes by cache key, how many came from the cache, rollouts sampled) of problem `g` with each
    strategy of `keys` (None: autonomous): the cached ones read, the others sampled and cached."""
    have = store.get_many(keys.values())
    cached = sum(1 for k in keys.values() if k in have)
    missing = [s for s, k in keys.items() if k not in have]
    if not missing:
        return have, cached, 0
    new = _sample_outcomes(g, missing, keys, model, tokenizer, verifier, config)
    store.put_many(new)
    have.update(new)
    return have, cached, len(missing) * config.sampling.k


def _choose(
    g: _Group,
    rows: list[dict[str, Any]],
    strategies: list[str],
    auto: list[bool],
    guided: list[list[bool]],
    config: ScoringConfig,
) -> tuple[dict[str, Any], list[dict[str, Any]], float, bool]:
    """(the problem's output row, its candidate rows, the best score, whether the best is kept) from the
    autonomous and guided outcomes of its candidate `strategies`."""
    scores = [strategy_score(c, auto) for c in guided]
    b = best_index(scores)
    base = dict(rows[g.candidates[b]])
    auto_acc = sum(auto) / len(auto)
    keep = config.min_score is None or scores[b] >= config.min_score
    base.update(
        strategy=strategies[b] if keep else None,
        strategy_score=scores[b],
        guided_accuracy=sum(guided[b]) / len(guided[b]),
        auto_accuracy=auto_acc,
    )
    candidates = [
        {
            **rows[i],
            "strategy_score": sc,
            "guided_accuracy": sum(c) / len(c),
            "auto_accuracy": auto_acc,
            "chosen": i == g.candidates[b],
        }
        for i, c, sc in zip(g.candidates, guided, scores)
    ]
    return base, candidates, scores[b], keep


def score_strategies(
    input: Any,
    output: str | os.PathLike,
    model: Any,
    tokenizer: Any = None,
    config: ScoringConfig = ScoringConfig(),
    *,
    verifier: Any = None,
    cache: str | os.PathLike | None = None,
    candidates_output: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
) -> ScoringSummary:
    """Score candidate strategies with a policy (a path / hub id, or a loaded model + tokenizer) under
    `config`; write one row per problem to `output` (and every candidate to `candidates_output`)."""
    start = time.monotonic()
    rows, name = load_rows(input)
    if not rows:
        raise DataError(f"{name}: no rows to score")
    output = Path(output)
    columns, sampling = config.columns, config.sampling
    groups = group_candidates(rows, columns, config.group_by, config.max_candidates, name)
    model_id = _model_id(model)
    model, tokenizer = _load_policy(model, tokenizer, device)
    owns_verifier = verifier is None
    verifier = verifier or Verifier()
    cache_path = Path(cache) if cache is not None else Path(str(output) + ".cache.sqlite")
    store = ResultStore(cache_path, table="scores")
    # the key of every cached outcome: model, prompt format, sampling {k, temperature, top_p, max_new_tokens, seed}
    key_parts = ("sgpo-score-v1", model_id, asdict(config.prompt_format), asdict(sampling))
    bar = RunProgress(len(groups), label="score", enabled=progress)
    out_rows: list[dict[str, Any]] = []
    cand_rows: list[dict[str, Any]] = []
    n_rollouts = from_cache = n_scored = kept = 0
    autos, bests = [], []  # per problem with candidates: autonomous accuracy, best score
    try:
        for g in groups:
            strategies = [rows[i][columns.strategy] for i in g.candidates]
            keys = {s: content_hash(*key_parts, g.problem, g.answer, s) for s in [None, *strategies]} if strategies else {}
            have, cached, sampled = _outcomes(g, keys, store, model, tokenizer, verifier, config)
            from_cache, n_rollouts = from_cache + cached, n_rollouts + sampled
            if strategies:
                auto = have[keys[None]]["correct"]
                base, candidates, best, keep = _choose(
                    g, rows, strategies, auto, [have[keys[s]]["correct"] for s in strategies], config
                )
                autos.append(base["auto_accuracy"])
                bests.append(best)
                n_scored += len(strategies)
                kept += int(keep)
                cand_rows += candidates
            else:
                base = dict(rows[g.candidates[0]] if g.candidates else rows[g.rows[0]])
                base.update(strategy=None, strategy_score=None, guided_accuracy=None, auto_accuracy=None)
            base.update(num_candidates=len(strategies), scoring_k=sampling.k, scoring_model=model_id)
            out_rows.append(base)
            bar.advance("scored" if strategies else "no_candidate")
    finally:
        bar.close()
        store.close()
        if owns_verifier:
            verifier.close()
    write_rows(output, out_rows)
    if candidates_output is not None:
        write_rows(candidates_output, cand_rows)
    return ScoringSummary(
        input=name,
        output=str(output),
        cache=str(cache_path),
        problems=len(groups),
        problems_with_candidates=sum(1 for g in groups if g.candidates),
        candidates_scored=n_scored,
        rollouts=n_rollouts,
        from_cache=from_cache,
        mean_auto_accuracy=sum(autos) / len(autos) if autos else None,
        mean_best_score=sum(bests) / len(bests) if bests else None,
        kept=kept,
        elapsed_s=round(time.monotonic() - start, 3),
        extra={"input_rows": len(rows), "group_by": config.group_by},
    )
