"""Adaptive per-problem distillation weights ("when to distill", docs/algorithm.md §6).

Shapes: B problems. acc_auto / acc_guided are the fractions of correct autonomous / guided
completions of each problem in this generation batch.

    marginal  w = clip(acc_guided − acc_auto, 0, 1)          the strategy's marginal benefit
    deficit   w = (1 − acc_auto) · [acc_guided > 0]           distil wherever the policy falls short
    constant  w = 1                                          (ablation)

Optionally smoothed by an exponential moving average over the times a problem is seen
(`InstanceWeightEMA`, keyed by problem id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def marginal_weight(acc_auto: torch.Tensor, acc_guided: torch.Tensor) -> torch.Tensor:
    """(B,), (B,) -> (B,)"""
    return (acc_guided - acc_auto).clamp(0.0, 1.0)


def deficit_weight(acc_auto: torch.Tensor, acc_guided: torch.Tensor) -> torch.Tensor:
    """(B,), (B,) -> (B,)"""
    return (1.0 - acc_auto) * (acc_guided > 0).to(acc_auto.dtype)


def constant_weight(acc_auto: torch.Tensor, acc_guided: torch.Tensor) -> torch.Tensor:
    """(B,), (B,) -> (B,)"""
    return torch.ones_like(acc_auto)


INSTANCE_WEIGHTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "marginal": marginal_weight,
    "deficit": deficit_weight,
    "constant": constant_weight,
}


def instance_weights(mode: str, acc_auto: torch.Tensor, acc_guided: torch.Tensor) -> torch.Tensor:
    if mode not in INSTANCE_WEIGHTS:
        raise ValueError(f"unknown instance_weighting {mode!r}; known: {', '.join(INSTANCE_WEIGHTS)}")
    return INSTANCE_WEIGHTS[mode](acc_auto, acc_guided)


def ema_update(previous: torch.Tensor, current: torch.Tensor, seen: torch.Tensor, decay: float) -> torch.Tensor:
    """w̄ ← decay·w̄ + (1 − decay)·w where the problem was seen before, w̄ ← w otherwise.

    previous, current: (B,); seen: (B,) bool  ->  (B,)
    """
    return torch.where(seen, decay * previous + (1.0 - decay) * current, current)


class InstanceWeightEMA:
    """Per-problem EMA of the instance weight, keyed by problem id; saved with checkpoints."""

    def __init__(self, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"instance_weight_ema must be in [0, 1), got {decay}")
        self.decay = decay
        self.values: dict[str, float] = {}

    def __call__(self, ids: Sequence[str], weights: torch.Tensor) -> torch.Tensor:
        """Smoothed weights for `ids` (B,), updating the store."""
        if self.decay == 0.0:
            return weights
        prev = torch.tensor([self.values.get(i, 0.0) for i in ids], dtype=weights.dtype)
        seen = torch.tensor([i in self.values for i in ids])
        out = ema_update(prev, weights.detach().cpu(), seen, self.decay)
        for i, v in zip(ids, out.tolist()):
            self.values[i] = v
        return out.to(weights.device)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "values": dict(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.values = {str(k): float(v) for k, v in state.get("values", {}).items()}
