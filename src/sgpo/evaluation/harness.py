"""The evaluation harness: prompts → k completions each → verdicts → metrics.

`evaluate_records` is the one entry point the trainer, the strategy-world demo and `sgpo eval` use,
so a number in any table was produced by the same prompting, sampling and answer checking.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgpo.data import DataError
from sgpo.evaluation import metrics
from sgpo.evaluation.generation import HFGenerator, VLLMGenerator, is_generator, load_model_and_tokenizer, select_backend
from sgpo.modeling import load_tokenizer
from sgpo.prompts import PromptFormat
from sgpo.sampling import SamplingConfig
from sgpo.strategies.base import Strategy, render_strategy
from sgpo.verify import default_verifier


@dataclass
class EvalResult:
    """Verdicts on k samples for each of n records, and the metrics computed from them.

    samples: n·k dicts in record order (sample_index 0..k−1 within a record), with keys
             id, sample_index, prompt, completion, extracted, answer, correct, timed_out,
             completion_tokens, finished (False: the completion hit max_new_tokens).
    accuracy: avg@k;  pass_at_k: {j: pass@j};  ci95: the 95% interval of avg@k (see `metrics`).
    """

    records: list[dict[str, Any]] = field(repr=False)
    samples: list[dict[str, Any]] = field(repr=False)
    k: int
    settings: dict[str, Any] = field(default_factory=dict)
    accuracy: float = field(init=False)
    pass_at_k: dict[int, float] = field(init=False)
    ci95: tuple[float, float] = field(init=False)
    n: int = field(init=False)
    num_timeouts: int = field(init=False)

    def __post_init__(self) -> None:
        if len(self.samples) != len(self.records) * self.k:
            raise ValueError(f"{len(self.samples)} samples for {len(self.records)} records with k={self.k}")
        summary = metrics.summarize(self.per_problem())
        self.n = summary["n"]
        self.accuracy = summary["accuracy"]
        self.pass_at_k = summary["pass_at_k"]
        self.ci95 = summary["ci95"]
        self.num_timeouts = sum(1 for s in self.samples if s.get("timed_out"))

    def per_problem(self) -> list[list[bool]]:
        """The k verdicts of each record."""
        return [[bool(s["correct"]) for s in self.samples[i * self.k : (i + 1) * self.k]] for i in range(len(self.records))]

    @property
    def greedy(self) -> bool:
        return self.settings.get("temperature") == 0

    @property
    def greedy_accuracy(self) -> float | None:
        """The accuracy when the samples were decoded greedily (temperature 0), else None."""
        return self.accuracy if self.greedy else None

    @property
    def mean_completion_tokens(self) -> float:
        return sum(s.get("completion_tokens", 0) for s in self.samples) / max(1, len(self.samples))

    @property
    def truncated_fraction(self) -> float:
        """Share of completions that hit `max_new_tokens` without an end-of-sequence token."""
        return sum(1 for s in self.samples if s.get("finished") is False) / max(1, len(self.samples))

    def by_group(self, key: str) -> dict[Any, float]:
        """avg@k per value of the record column `key` (e.g. the strategy world's `family`)."""
        missing = [i for i, r in enumerate(self.records) if key not in r]
        if missing:
            cols = ", ".join(sorted(self.records[missing[0]]))
            raise KeyError(f"record {missing[0]} has no column {key!r} (columns: {cols})")
        totals: dict[Any, list[int]] = {}
        for rec, verdicts in zip(self.records, self.per_problem()):
            value = rec[key]
            value = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            hit = totals.setdefault(value, [0, 0])
            for correct in verdicts:
                hit[0] += int(correct)
                hit[1] += 1
        return {v: c / t for v, (c, t) in totals.items()}

    def summary(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict (no samples)."""
        out = {
            "n": self.n,
            "k": self.k,
            "accuracy": self.accuracy,
            "pass_at_k": {str(j): v for j, v in self.pass_at_k.items()},
            "ci95": list(self.ci95),
            "num_timeouts": self.num_timeouts,
            "mean_completion_tokens": self.mean_completion_tokens,
            "truncated_fraction": self.truncated_fraction,
            "settings": self.settings,
        }
        if self.greedy:
            out["greedy_accuracy"] = self.accuracy
        return out


def _strategy_text(value: Any, row: int, rid: str) -> str:
    if isinstance(value, Mapping):
        try:
            return render_strategy(Strategy.model_validate(value))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"record {row} (id {rid}): column 'strategy' is not a valid strategy: {exc}") from exc
    if isinstance(value, str) and value.strip():
        return value
    raise DataError(f"record {row} (id {rid}): guided evaluation needs a non-empty 'strategy', got {value!r:.60}")


def _checked_records(records: Sequence[Mapping[str, Any]], guided: bool) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise DataError(f"record {i}: expected a dict, got {type(rec).__name__}")
        rec = dict(rec)
        rid = str(rec.get("id", i))
        for col in ("problem", "answer"):
            value = rec.get(col)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and col == "answer":
                rec[col] = str(value)
            elif not isinstance(value, str) or not value.strip():
                raise DataError(f"record {i} (id {rid}): column {col!r} must be a non-empty string, got {value!r:.60}")
        if guided:
            _strategy_text(rec.get("strategy"), i, rid)
        rec["id"] = rid
        out.append(rec)
    if not out:
        raise DataError("no records to evaluate")
    return out


def make_generator(
    model,
    tokenizer=None,
    *,
    backend: str = "auto",
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str = "auto",
    **vllm_kwargs,
):
    """A generator for `model` (a loaded HF model, or a path loaded here; a generator is returned as
    is) — see `generation`."""
    if is_generator(model):
        return model
    chosen = select_backend(backend, model)
    if chosen == "vllm":
        tok = tokenizer or load_tokenizer(str(model))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return VLLMGenerator(model, tok, dtype=dtype, **vllm_kwargs)
    if isinstance(model, (str, os.PathLike)):
        loaded, tok = load_model_and_tokenizer(model, device=device, dtype=dtype)
        return HFGenerator(loaded, tokenizer or tok, batch_size)
    if tokenizer is None:
        raise ValueError("a tokenizer is needed with a loaded model")
    return HFGenerator(model, tokenizer, batch_size)


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation run samples and how: the sampling settings, guided prompts or not (the
    record's `strategy` in the prompt, through `prompt_format.guided_template`), the prompt format,
    sequences per `generate` call of the HF backend (`batch_size`, None: all at once) and the
    generation `backend` ("auto", "hf" or "vllm", see `generation.select_backend`)."""

    sampling: SamplingConfig = SamplingConfig()
    guided: bool = False
    prompt_format: PromptFormat = PromptFormat()
    batch_size: int | None = None
    backend: str = "auto"


def evaluate_records(
    model, tokenizer, records: Sequence[Mapping[str, Any]], config: EvalConfig = EvalConfig(), *, verifier=None
) -> EvalResult:
    """Sample `config.sampling.k` completions per record and check their last `\\boxed{}` against `answer`.

    model: a loaded HF causal LM (then `tokenizer` is required), a path to one (loaded here; vLLM is
    used when installed and a GPU is present, see `config.backend`), or a generator from `make_generator`.
    records: dicts with `problem`, `answer`, optional `id`, and `strategy` when `config.guided`. Other
    columns are kept for `EvalResult.by_group`. Temperature 0 is greedy decoding (then k must be 1).
    verifier: a `sgpo.verify.Verifier` (default: the shared process-wide one).
    """

    s = config.sampling
    if s.temperature == 0 and s.k > 1:
        raise ValueError(
            f"k={s.k} with temperature 0 would sample the same greedy completion {s.k} times; "
            "use k=1 for greedy accuracy or a temperature > 0 for avg@k"
        )
    recs = _checked_records(records, config.guided)
    gen = make_generator(model, tokenizer, backend=config.backend, batch_size=config.batch_size)
    tok = gen.tokenizer
    fmt = config.prompt_format
    prompts = [
        fmt.render(tok, r["problem"], _strategy_text(r.get("strategy"), i, r["id"]) if config.guided else None)
        for i, r in enumerate(recs)
    ]
    completions = gen.generate(
        prompts,
        k=s.k,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
        seed=s.seed,
        add_special_tokens=not fmt.applies_chat_template(tok),
    )
    flat = [c for group in completions for c in group]
    golds = [r["answer"] for r in recs for _ in range(s.k)]
    checks = (verifier or default_verifier()).check([c.text for c in flat], golds)
    samples = []
    for i, rec in enumerate(recs):
        for j in range(s.k):
            c, chk = flat[i * s.k + j], checks[i * s.k + j]
            samples.append(
                {
                    "id": rec["id"],
                    "sample_index": j,
                    "prompt": prompts[i],
                    "completion": c.text,
                    "extracted": chk.extracted,
                    "answer": rec["answer"],
                    "correct": chk.correct,
                    "timed_out": chk.timed_out,
                    "completion_tokens": c.num_tokens,
                    "finished": c.finished,
                }
            )
    return EvalResult(records=recs, samples=samples, k=s.k, settings=eval_settings(config, gen.name))


def eval_settings(config: EvalConfig, backend: str) -> dict:
    """Everything that decides what a sample is (`backend`: the generator actually used); two runs
    with equal settings are interchangeable."""
    s, fmt = config.sampling, config.prompt_format
    return {
        "k": s.k,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_new_tokens": s.max_new_tokens,
        "guided": config.guided,
        "seed": s.seed,
        "backend": backend,
        "prompt_format": {
            "template": fmt.template,
            "guided_template": fmt.guided_template,
            "system_prompt": fmt.system_prompt,
            "use_chat_template": fmt.use_chat_template,
        },
    }
