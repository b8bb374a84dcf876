"""Group-relative advantages (GRPO family).

Shapes: B problems, G completions per problem, rewards laid out problem-major as (B*G,).
"""

from __future__ import annotations

import torch

ADVANTAGE_EPS = 1e-4  # as TRL: A = (r - mean) / (std + 1e-4)


def group_relative_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: str = "group") -> torch.Tensor:
    """A_j = (r_j - mean_group(r)) / (std + 1e-4), with TRL's `scale_rewards` meanings:

    - "group": std of the completion's own group (unbiased, Bessel-corrected, as TRL);
    - "batch": std over the whole batch (all groups together);
    - "none":  no division (Dr. GRPO).

    rewards: (B*G,)  ->  advantages: (B*G,)
    A group of one completion has std 0 (its advantage is 0 under "group"/"none").
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be (B*G,) with G={group_size}, got shape {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)  # (B, G)
    mean = grouped.mean(dim=1, keepdim=True)  # (B, 1)
    centred = (grouped - mean).reshape(-1)  # (B*G,)
    if scale_rewards == "none":
        return centred
    if scale_rewards == "group":
        if group_size > 1:
            std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
        else:
            std = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    else:
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    return centred / (std + ADVANTAGE_EPS)
