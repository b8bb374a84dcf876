"""Token-level quantities from final hidden states and the LM head.

The trainer never asks the model for logits: it takes the final hidden states and applies the LM
head here, so that the same call sites can use either this plain implementation (logits
materialised for the positions given) or the chunked, memory-bounded one in `sgpo.objectives.chunked_head`.

Shapes: N token positions, H hidden size, V vocabulary. `weight` is the LM head (V, H); logits are
divided by the sampling `temperature`, so log-probs are those of the distribution that was sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sgpo.objectives.divergence import _upcast, token_divergence


def head_logits(
    hidden: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, H), (V, H) -> (N, V) logits / temperature (half precision upcast to float32)"""
    logits = _upcast(F.linear(hidden, weight, bias))
    return logits / temperature if temperature != 1.0 else logits


def sampled_logps(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """log π(target) per position. hidden (N, H), weight (V, H), targets (N,) -> (N,)"""
    logits = head_logits(hidden, weight, temperature, bias)
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def token_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Entropy −Σ_v π(v) log π(v) of the sampling distribution at each position, no grad, with
    `chunk_size` rows of logits at a time (default: a 32 MiB float32 buffer). (N, H), (V, H) -> (N,)"""
    step = chunk_size or max(1, (32 * 2**20) // (4 * weight.shape[0]))
    parts = []
    for start in range(0, hidden.shape[0], step):
        logp = head_logits(hidden[start : start + step], weight, temperature, bias).log_softmax(-1)
        parts.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


@dataclass
class DistillTerms:
    """Per-position outputs of the distillation head, all (N,).

    divergence:    D(q‖p) (or D(p‖q) for reverse_kl), differentiable w.r.t. the student
    student_logp:  log p(target), differentiable (used for the proximal ratio)
    teacher_logp:  log q(target), no grad
    """

    divergence: torch.Tensor
    student_logp: torch.Tensor
    teacher_logp: torch.Tensor


def distill_terms(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    teacher_weight: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    kind: str = "forward_kl",
    topk: int | None = None,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
) -> DistillTerms:
    """Divergence and sampled-token log-probs at N positions.

    student_hidden (N, H) with grad; teacher_hidden (N, H) no grad; weight (V, H) and bias (V,) the
    LM head (the student's; `teacher_weight` / `teacher_bias` are the rollout-time snapshots when the
    policy moved since, else the student's are used, detached); targets (N,).
    """
    s_logits = head_logits(student_hidden, weight, temperature, bias)  # (N, V)
    with torch.no_grad():
        t_w = weight if teacher_weight is None else teacher_weight
        t_b = bias if teacher_bias is None else teacher_bias
        t_logits = head_logits(teacher_hidden, t_w.detach(), temperature, None if t_b is None else t_b.detach())
        t_logp = t_logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    div = token_divergence(s_logits, t_logits, kind, topk)
    s_logp = s_logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return DistillTerms(div, s_logp, t_logp)
