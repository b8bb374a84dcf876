"""Sampling settings shared by the commands that sample completions (`sgpo eval`, `sgpo
score-strategies`); torch-free, so importing them costs nothing."""

from __future__ import annotations

from dataclasses import dataclass


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
