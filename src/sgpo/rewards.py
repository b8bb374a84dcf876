"""Reward functions with TRL's signature `f(prompts, completions, **columns) -> list[float]`.

Columns of the data set arrive as keyword lists aligned with `completions` (e.g. `answer`, `id`),
plus `guided` (whether the completion was sampled with the strategy in its prompt).
Recipes name reward functions by registry name (`accuracy`) or import path (`pkg.module:function`).
`RewardFunctions` calls them on a batch of completions (the trainer's "score" phase) and turns any
failure into a `RewardFunctionError` naming the function and the row.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sgpo.answers import extract_boxed
from sgpo.data import INTERNAL_COLUMNS
from sgpo.verify import default_verifier

RewardFunc = Callable[..., list[float]]


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned the wrong number of values, or a NaN / None."""


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


class RewardFunctions:
    """The reward functions of a run and their weights: `funcs` (resolved by `resolve_reward_func`),
    `names`, `weights` (n_funcs,) float32 (all 1 when None)."""

    def __init__(self, specs: Sequence[str | RewardFunc] | str | RewardFunc, weights: Sequence[float] | None = None):
        if isinstance(specs, str) or callable(specs):
            specs = [specs]
        self.funcs: list[RewardFunc] = [resolve_reward_func(f) for f in specs]
        if not self.funcs:
            raise ValueError("at least one reward function is needed")
        self.names = [reward_func_name(f) for f in self.funcs]
        weights = weights if weights is not None else [1.0] * len(self.funcs)
        if len(weights) != len(self.funcs):
            raise ValueError(f"reward_weights has {len(weights)} values for {len(self.funcs)} reward functions")
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def __call__(
        self, prompts: list[str], completions: list[str], rows: list[dict[str, Any]], guided: list[bool]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted sum (n,), each function's rewards (n, n_funcs)) of the n completions; `rows[j]` is
        the data set row of completion j, whose columns (but the `INTERNAL_COLUMNS`) reach the functions
        as keyword lists, with `guided`. Errors name the function and the row."""
        keys = [k for k in rows[0] if k not in INTERNAL_COLUMNS]
        columns = {k: [r[k] for r in rows] for k in keys}
        columns["guided"] = list(guided)

        def describe(j: int) -> str:
            kind = "guided" if guided[j] else "autonomous"
            return f"problem id {rows[j]['id']!r} ({kind} completion)"

        per_func = torch.zeros(len(completions), len(self.funcs))
        for f_idx, (fn, name) in enumerate(zip(self.funcs, self.names)):
            t_call = time.perf_counter()
            try:
                values = fn(prompts=prompts, completions=completions, **columns)
            except Exception as exc:
                culprit = ""
                # find the first row that fails on its own — unless the call was slow to fail (a broken
                # service, not a bad row): then retrying row by row would only multiply the wait
                rows_to_try = range(len(completions)) if time.perf_counter() - t_call < 5.0 else range(0)
                for j in rows_to_try:
                    try:
                        fn(
                            prompts=prompts[j : j + 1],
                            completions=completions[j : j + 1],
                            **{k: v[j : j + 1] for k, v in columns.items()},
                        )
                    except Exception:  # noqa: BLE001
                        culprit = f"; it fails on {describe(j)}"
                        break
                raise RewardFunctionError(f"reward function {name!r} raised {type(exc).__name__}: {exc}{culprit}") from exc
            values = list(values) if values is not None else []
            if len(values) != len(completions):
                raise RewardFunctionError(
                    f"reward function {name!r} returned {len(values)} values for {len(completions)} completions"
                )
            for j, v in enumerate(values):
                if v is None or not isinstance(v, (int, float)) or math.isnan(float(v)):
                    raise RewardFunctionError(f"reward function {name!r} returned {v!r} for {describe(j)}")
            per_func[:, f_idx] = torch.tensor([float(v) for v in values])
        return (per_func * self.weights).sum(dim=1), per_func
