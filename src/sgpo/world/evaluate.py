"""Held-out accuracy of a model on world records, autonomous and guided, overall and per family.

Measured by the project's evaluation harness (`sgpo.evaluation.evaluate_records`: prompts from
`PromptFormat.render` with the chat template, greedy decoding, `sgpo.verify.Verifier`), the same one
`sgpo eval` uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sgpo.evaluation.harness import EvalConfig, evaluate_records
from sgpo.prompts import PromptFormat
from sgpo.sampling import SamplingConfig
from sgpo.verify import Verifier
from sgpo.world.prompt import WORLD_PROMPT_FORMAT

MODES = ("auto", "guided")


def heldout_accuracy(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    *,
    prompt_format: PromptFormat = WORLD_PROMPT_FORMAT,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 128,
    verifier: Verifier | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    modes: Sequence[str] = MODES,
    per_record: bool = False,
) -> dict[str, Any]:
    """`{"auto": a, "guided": g, "gap": g - a, "n": N, "per_family": {family: {"auto", "guided", "gap", "n"}}}`.

    `modes` ("auto", "guided" or both) are the modes measured; "gap" needs both. With `per_record`,
    `"correct": {mode: [per record]}` too, in the order of `records` (for paired comparisons): a bool
    with one sample, the record's pass rate (the share of its samples that are right) with several.

    Accuracy is the fraction of completions whose last `\\boxed{}` equals the gold answer: one
    completion per record and mode, greedy by default; with `samples` = k > 1 at a `temperature` > 0,
    k sampled completions per record (from `seed`), so accuracy is pass@1 averaged over k samples (and a
    record's pass rate is resolved below 1/k, where one greedy completion sees only 0 or 1). Measured by the project's evaluation
    harness (`sgpo.evaluation.evaluate_records`). Guided prompts carry the record's `strategy`; every
    record must have one. `on_progress(done, total)` is called after each mode (total = len(modes) x records).
    """

    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be some of {MODES}, got {list(modes)}")
    missing = [r.get("id", i) for i, r in enumerate(records) if not r.get("strategy")] if "guided" in modes else []
    if missing:
        raise ValueError(f"{len(missing)} record(s) have no strategy for the guided evaluation, e.g. id {missing[0]!r}")
    correct: dict[str, list[float]] = {}
    for j, mode in enumerate(modes):
        sampling = SamplingConfig(k=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        config = EvalConfig(sampling, guided=mode == "guided", prompt_format=prompt_format, batch_size=batch_size)
        result = evaluate_records(model, tokenizer, list(records), config, verifier=verifier)
        verdicts = result.per_problem()
        correct[mode] = [v[0] for v in verdicts] if samples == 1 else [sum(v) / samples for v in verdicts]
        if on_progress is not None:
            on_progress((j + 1) * len(records), len(modes) * len(records))
    result = summarize(records, correct)
    if per_record:
        result["correct"] = correct
    return result


def _rates(flags: dict[str, list[float]]) -> dict[str, float]:
    n = len(next(iter(flags.values())))
    out: dict[str, float] = {m: round(sum(flags[m]) / n if n else 0.0, 6) for m in MODES if m in flags}
    if len(out) == len(MODES):
        out["gap"] = round(out["guided"] - out["auto"], 6)
    return {**out, "n": n}


def summarize(records: Sequence[Mapping[str, Any]], correct: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Accuracy overall and per `family` from per-record verdicts (bools) or pass rates of each mode in `correct`."""
    modes = [m for m in MODES if m in correct]
    by_family: dict[str, dict[str, list[float]]] = defaultdict(lambda: {m: [] for m in modes})
    for i, r in enumerate(records):
        for m in modes:
            by_family[r.get("family", "?")][m].append(float(correct[m][i]))
    out = _rates({m: [float(c) for c in correct[m]] for m in modes})
    out["per_family"] = {fam: _rates(flags) for fam, flags in sorted(by_family.items())}
    return out


def summarize_modes(records: Sequence[Mapping[str, Any]], auto: Mapping[str, Any], guided: Mapping[str, Any]) -> dict[str, Any]:
    """One `heldout_accuracy` result from an autonomous-only and a guided-only one on the same
    `records` (each with `per_record`), as if both modes had been measured in one call."""
    correct = {"auto": auto["correct"]["auto"], "guided": guided["correct"]["guided"]}
    return {**summarize(records, correct), "correct": correct}


def auto_and_guided(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    *,
    samples: int = 1,
    guided_samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    max_new_tokens: int = 64,
    batch_size: int = 128,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Autonomous accuracy over `samples` completions per record and guided accuracy over
    `guided_samples` (at `temperature`; one sample: greedy), per record (`"correct"`) and summarised."""

    def one(mode: str, k: int, done: int) -> dict[str, Any]:
        t = temperature if k > 1 else 0.0
        progress = None if on_progress is None else (lambda d, total: on_progress(done + d, 2 * len(records)))
        return heldout_accuracy(model, tokenizer, records, modes=(mode,), samples=k, temperature=t, seed=seed,
                                max_new_tokens=max_new_tokens, batch_size=batch_size, per_record=True, on_progress=progress)  # fmt: skip

    return summarize_modes(records, one("auto", samples, 0), one("guided", guided_samples, len(records)))
