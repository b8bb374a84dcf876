"""Reward functions with TRL's signature `f(prompts, completions, **columns) -> list[float]`.

Columns of the data set arrive as keyword lists aligned with `completions` (e.g. `answer`, `id`),
plus `guided` (whether the completion was sampled with the strategy in its prompt).
Recipes name reward functions by registry name (`accuracy`) or import path (`pkg.module:function`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from sgpo.answers import extract_boxed
from sgpo.verify import default_verifier

RewardFunc = Callable[..., list[float]]


def accuracy_reward(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str], **_) -> list[float]:
    """1.0 when the last `\\boxed{}` of the completion equals the gold `answer` (math-verify), else 0.0."""
    checks = default_verifier().check(list(completions), [str(a) for a in answer])
    return [1.0 if c.correct else 0.0 for c in checks]


def boxed_format_reward(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
    """1.0 when the completion has a final `\\boxed{...}` answer, else 0.0."""
    return [0.0 if extract_boxed(c) is None else 1.0 for c in completions]


REWARD_FUNCS: dict[str, RewardFunc] = {
    "accuracy": accuracy_reward,
    "boxed_format": boxed_format_reward,
}


def resolve_reward_func(spec: str | RewardFunc) -> RewardFunc:
    """A reward function from a callable, a registry name, or `package.module:function`."""
    if callable(spec):
        return spec
    if spec in REWARD_FUNCS:
        return REWARD_FUNCS[spec]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"reward function {spec!r} could not be imported: {exc}") from exc
        if not callable(fn):
            raise ValueError(f"reward function {spec!r} is not callable")
        return fn
    raise ValueError(f"unknown reward function {spec!r}; known: {', '.join(REWARD_FUNCS)}, or give 'module:function'")


def reward_func_name(fn: RewardFunc) -> str:
    return getattr(fn, "__name__", type(fn).__name__)
