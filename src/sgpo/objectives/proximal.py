"""The proximal constraint on the distillation term (docs/algorithm.md §5).

The student ratio of the sampled token, ρ_t = π_θ(ỹ_t | x, ỹ_<t) / π_old(ỹ_t | x, ỹ_<t), says how far
the optimizer steps taken on this generation batch have already moved that token. A token leaves the
KL term once it has moved far enough *in the direction the teacher wants*:

    drop t  if  q_t(ỹ_t) > π_old(ỹ_t) and ρ_t > 1 + ε_high     (teacher wants it up, already up)
            or  q_t(ỹ_t) < π_old(ỹ_t) and ρ_t < 1 − ε_low      (teacher wants it down, already down)

Shapes: (N, T) per-token log-probs of the sampled tokens.
"""

from __future__ import annotations

import torch


def proximal_keep_mask(
    student_logp: torch.Tensor,
    old_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> torch.Tensor:
    """1.0 where the token stays in the KL term, 0.0 where the constraint drops it.

    student_logp: log π_θ(ỹ_t|x,ỹ_<t) (N, T); old_logp: log π_old(ỹ_t|x,ỹ_<t) (N, T);
    teacher_logp: log q_t(ỹ_t) (N, T)  ->  (N, T) float, no grad.
    """
    with torch.no_grad():
        ratio = torch.exp(student_logp.detach() - old_logp)
        up = teacher_logp > old_logp
        down = teacher_logp < old_logp
        drop = (up & (ratio > 1 + epsilon_high)) | (down & (ratio < 1 - epsilon_low))
        return (~drop).to(student_logp.dtype)


def cap_per_token(kl: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Optional per-token cap: min(KL_t, cap). A capped token contributes `cap` and no gradient (as a
    clipped PPO token does). kl: (N, T) -> (N, T)"""
    if cap is None:
        return kl
    return torch.clamp(kl, max=cap)
