"""Aggregating per-token losses into a scalar, normalised by *global* counts.

The normalisers are counts over the whole optimizer step (every micro-batch, every process), so the
sum of the micro-batch losses equals the loss of the whole batch however it is split. The modes carry
verl's names and reproduce TRL's `loss_type` semantics:

    loss_type  mode                      loss
    grpo       seq-mean-token-mean       Σ_i (Σ_t ℓ_it m_it / Σ_t m_it) / N_seq
    bnpo       batch-token-mean          Σ_micro-batches (Σ_it ℓ_it m_it / Σ_it m_it) / N_micro   (TRL: the token mean of
                                         each micro-batch, averaged over the step's micro-batches and processes)
    dr_grpo    seq-mean-token-sum-norm   Σ_it ℓ_it m_it / (N_seq · max_completion_length)
    dapo       token-mean                Σ_it ℓ_it m_it / N_tok
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LOSS_TYPE_TO_AGG_MODE = {
    "grpo": "seq-mean-token-mean",
    "bnpo": "batch-token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "dapo": "token-mean",
}


@dataclass(frozen=True)
class GlobalCounts:
    """Counts over the whole optimizer step (all micro-batches, all processes)."""

    num_sequences: float
    num_tokens: float
    max_completion_length: int = 1
    num_micro_batches: float = 1.0  # micro-batches of the step over all processes (bnpo)


def _seq_mean_token_mean(mask: torch.Tensor, counts: GlobalCounts) -> torch.Tensor:
    return mask / mask.sum(-1, keepdim=True).clamp(min=1.0) / max(counts.num_sequences, 1.0)


def _seq_mean_token_sum_norm(mask: torch.Tensor, counts: GlobalCounts) -> torch.Tensor:
    return mask / max(counts.num_sequences * counts.max_completion_length, 1.0)


def _batch_token_mean(mask: torch.Tensor, counts: GlobalCounts) -> torch.Tensor:
    return mask / mask.sum().clamp(min=1.0) / max(counts.num_micro_batches, 1.0)


def _token_mean(mask: torch.Tensor, counts: GlobalCounts) -> torch.Tensor:
    return mask / max(counts.num_tokens, 1.0)


AGGREGATIONS: dict[str, Callable[[torch.Tensor, GlobalCounts], torch.Tensor]] = {
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
    "token-mean": _token_mean,
    "batch-token-mean": _batch_token_mean,
}


def token_weights(mask: torch.Tensor, mode: str, counts: GlobalCounts) -> torch.Tensor:
    """The weight of each token in the aggregate: aggregate(x) = Σ x · token_weights.

    mask: (N, T), this micro-batch's (batch-token-mean normalises by its own tokens)  ->  (N, T), 0 where the mask is 0. (Also the per-token factor of the loss's
    gradient, which the chunked LM head uses to finish its weight gradient in the forward pass.)
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; known: {', '.join(AGGREGATIONS)}")
    return AGGREGATIONS[mode](mask, counts)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, counts: GlobalCounts) -> torch.Tensor:
    """This micro-batch's share of the global loss.

    per_token, mask: (N, T)  ->  scalar. Summing the results over every micro-batch of the step gives
    the loss of the whole step.
    """
    return (per_token * token_weights(mask.to(per_token.dtype), mode, counts)).sum()
