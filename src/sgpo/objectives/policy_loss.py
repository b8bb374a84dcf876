"""Per-token policy losses for the RL term.

Shapes: N sequences, T completion positions. Log-probs are of the sampled tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PolicyLossOutput:
    """per_token_loss: (N, T); the clip indicators are (N, T) bool, for logging."""

    per_token_loss: torch.Tensor
    low_clipped: torch.Tensor
    high_clipped: torch.Tensor


def _surrogate_branches(logp, old_logp, advantages, epsilon_low, epsilon_high, delta):
    """(A broadcast to logp, ρ, unclipped ρ·A (ρ capped at δ when set), clip(ρ, 1−ε_low, 1+ε_high)·A).
    A of shape (N,) with logp of shape (N, T) becomes (N, 1)."""
    if advantages.dim() == 1 and logp.dim() == 2:
        advantages = advantages.unsqueeze(1)  # (N, 1)
    ratio = torch.exp(logp - old_logp)
    unclipped = (torch.clamp(ratio, max=delta) if delta is not None else ratio) * advantages
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages
    return advantages, ratio, unclipped, clipped


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    delta: float | None = None,
) -> PolicyLossOutput:
    """PPO/GRPO clipped surrogate, per token:

        ρ = exp(logp - old_logp)
        ℓ = -min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A)

    With `delta`, ρ in the unclipped branch is capped at `delta` (two-sided clipping, as TRL).

    logp, old_logp: (N, T); advantages: (N,) or (N, T)  ->  per_token_loss: (N, T)
    """
    advantages, ratio, unclipped, clipped = _surrogate_branches(logp, old_logp, advantages, epsilon_low, epsilon_high, delta)
    per_token = -torch.min(unclipped, clipped)
    low = (ratio < 1 - epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    return PolicyLossOutput(per_token, low, high)


def clipped_surrogate_grad(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    delta: float | None = None,
) -> torch.Tensor:
    """∂ℓ/∂logp of `clipped_surrogate`, per token, written out:

        −A·ρ  where the unclipped branch is the minimum (and ρ ≤ δ when δ is set),
        −A·ρ  where the clipped branch is the minimum but ρ lies inside [1−ε_low, 1+ε_high],
        0     where the clipped branch is the minimum and ρ lies outside it.

    (The chunked LM head uses it to finish its weight gradient in the forward pass.)
    logp, old_logp: (N, T) or (M,); advantages broadcastable to them  ->  same shape, no grad
    """
    with torch.no_grad():
        advantages, ratio, unclipped, clipped = _surrogate_branches(logp, old_logp, advantages, epsilon_low, epsilon_high, delta)
        inside = (ratio >= 1 - epsilon_low) & (ratio <= 1 + epsilon_high)
        live = torch.where(unclipped <= clipped, ratio <= delta if delta is not None else torch.ones_like(inside), inside)
        return -advantages * ratio * live.to(ratio.dtype)


def sequence_level_logp(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's sequence-level ratio as log-probs: old + the mean log-ratio of each sequence, at every
    position, so that `clipped_surrogate(sequence_level_logp(...), old, A)` has one ratio per sequence,

        s_i = exp(Σ_t m_it (logp_it − old_it) / Σ_t m_it),

    with its gradient (TRL's `importance_sampling_level="sequence"`). logp, old_logp, mask: (N, T) -> (N, T)
    """
    mean = ((logp - old_logp) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)  # (N, 1)
    return old_logp + mean.expand_as(logp)


def shaped_off_policy(logp: torch.Tensor, advantages: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """LUFFY's off-policy term with policy shaping, no clipping: ℓ = -A · f(p), f(p) = p / (p + γ)
    (the LUFFY baseline, `mix_strong_responses`; not part of SGPO's loss).

    logp: (N, T); advantages: (N,) or (N, T)  ->  (N, T)
    """
    if advantages.dim() == 1 and logp.dim() == 2:
        advantages = advantages.unsqueeze(1)
    p = torch.exp(logp)
    return -advantages * p / (p + gamma)


def shaped_off_policy_grad(logp: torch.Tensor, advantages: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """∂/∂logp of `shaped_off_policy` = −A · γ p / (p + γ)², written out (no grad). Same shape as logp."""
    with torch.no_grad():
        if advantages.dim() == 1 and logp.dim() == 2:
            advantages = advantages.unsqueeze(1)
        p = torch.exp(logp)
        return -advantages * gamma * p / (p + gamma) ** 2


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ‖π_ref) per sampled token: exp(r - l) - (r - l) - 1.

    logp, ref_logp: (N, T)  ->  (N, T), ≥ 0
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def k3_kl_grad(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """∂/∂logp of `k3_kl` = 1 − exp(ref − logp). Same shape, no grad."""
    with torch.no_grad():
        return 1.0 - torch.exp(ref_logp - logp)
