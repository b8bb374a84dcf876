"""Sampling settings, torch-free, so importing them costs nothing: `SamplingConfig`, shared by the
commands that sample completions (`sgpo eval`, `sgpo score-strategies`), and the translation of Hugging
Face generation fields into vLLM's (`sampling_kwargs_from_generation_kwargs`, which `SGPOConfig`
checks and `sgpo.vllm_engine` applies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled, wherever a command samples them (`sgpo eval`, `sgpo
    score-strategies`): `k` completions per prompt at `temperature` (0 = greedy decoding) with
    nucleus `top_p`, at most `max_new_tokens` each, from `seed` (None: the current random state)."""

    k: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


# Hugging Face `GenerationConfig` fields (what `SGPOConfig.generation_kwargs` holds) -> vLLM
# `SamplingParams` fields. Fields that do not change what is sampled are dropped (None).
_GENERATION_KWARGS = {
    "max_new_tokens": "max_tokens",
    "min_new_tokens": "min_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "eos_token_id": "stop_token_ids",
    "do_sample": None,  # handled below: False means greedy
    "pad_token_id": None,
    "bos_token_id": None,
    "use_cache": None,
}


def sampling_kwargs_from_generation_kwargs(generation_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`SamplingParams` fields for `generation_kwargs` (GenerationConfig names, as the HF path takes
    them); raises ValueError naming a field without a vLLM equivalent."""
    out: dict[str, Any] = {}
    unknown = sorted(k for k in generation_kwargs if k not in _GENERATION_KWARGS)
    if unknown:
        supported = ", ".join(k for k in _GENERATION_KWARGS)
        raise ValueError(f"{', '.join(map(repr, unknown))} has no vLLM equivalent (with use_vllm, supported: {supported})")
    for key, value in generation_kwargs.items():
        target = _GENERATION_KWARGS[key]
        if key == "do_sample" and not value:
            out["temperature"] = 0.0
        elif key == "eos_token_id":
            out[target] = list(value) if isinstance(value, (list, tuple)) else [value]
        elif key == "top_k":
            out[target] = value or 0  # HF None / 0 = off, as vLLM's 0
        elif key == "min_p":
            out[target] = 0.0 if value is None else value
        elif target is not None:
            out[target] = value
    return out
