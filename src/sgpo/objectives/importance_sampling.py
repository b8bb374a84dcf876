"""Importance-sampling correction for the sampler/trainer mismatch (vLLM rollouts).

A separate inference engine samples from π_sampler, which differs slightly from the π_old the trainer
scores (other kernels, other precision, top-p/top-k truncation): the completions are off-policy. The
correction reweights the RL term's per-token loss by the ratio π_old / π_sampler of what was sampled,
bounded so that a rare large ratio cannot blow up the step (truncated IS). TRL 1.16's semantics
(`GRPOTrainer`, `vllm_importance_sampling_mode`), two choices along two axes:

- granularity: `token_*` — one ratio per token, r_t = exp(log π_old(y_t) − log π_sampler(y_t));
  `sequence_*` — one ratio per sequence, r = exp(Σ_t m_t (log π_old(y_t) − log π_sampler(y_t))),
  applied to all its tokens;
- bound: `*_truncate` — r ← clamp(r, C_min, C_max); `*_mask` — r ← 0 outside [C_min, C_max]
  (the token, or the whole sequence, leaves the loss).

Positions outside the mask, and positions whose sampler log-prob is NaN (the engine could not score
the token), have a log-ratio of 0: ratio 1, no correction. The ratio is a constant (no gradient);
the loss multiplies its per-token RL loss by it (TRL: `per_token_loss * importance_sampling_ratio`).

Shapes: N sequences, T completion positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def sampler_correction(
    trainer_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    clip_max: float | None = 3.0,
    clip_min: float | None = None,
) -> torch.Tensor:
    """Bounded importance ratios π_trainer / π_sampler of the sampled tokens.

    trainer_logp: log π_old(y_t) as the trainer scores it (N, T); sampler_logp: log π_sampler(y_t)
    from the engine (N, T), NaN where unknown; mask: (N, T) 1 on completion tokens.
    -> (N, T) for `token_*` modes, (N, 1) for `sequence_*` modes (broadcasts over T); float, no grad.
    """
    if mode not in IS_MODES:
        raise ValueError(f"importance sampling mode must be one of {', '.join(IS_MODES)}, got {mode!r}")
    if mode.endswith("truncate") and clip_min is None and clip_max is None:
        raise ValueError(f"mode {mode!r} needs clip_min or clip_max")
    with torch.no_grad():
        diff = torch.nan_to_num((trainer_logp.detach() - sampler_logp) * mask, nan=0.0)  # (N, T)
        if mode.startswith("sequence"):
            diff = diff.sum(dim=-1, keepdim=True)  # (N, 1)
        ratio = torch.exp(diff)
        if mode.endswith("truncate"):
            return torch.clamp(ratio, min=clip_min, max=clip_max)
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


@dataclass
class SamplerCorrectionStats:
    """Per-batch figures of the correction, kept as sums and extremes so several processes or
    micro-batches combine exactly (add the sums and counts, take max of maxima, min of minima).

    The ratio figures are over the ratios the loss uses: one per completion token (`token_*` modes)
    or one per sequence (`sequence_*` modes). The log-prob gap |log π_trainer − log π_sampler| is over
    completion tokens with a known sampler log-prob. An empty batch gives counts 0 and NaN extremes.
    """

    num_ratios: int
    ratio_sum: float
    ratio_min: float
    ratio_max: float
    num_tokens: int
    logp_gap_sum: float
    logp_gap_max: float

    @property
    def ratio_mean(self) -> float:
        return self.ratio_sum / self.num_ratios if self.num_ratios else math.nan

    @property
    def logp_gap_mean(self) -> float:
        return self.logp_gap_sum / self.num_tokens if self.num_tokens else math.nan


def sampler_correction_stats(
    ratio: torch.Tensor, trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor
) -> SamplerCorrectionStats:
    """Figures to log for one batch (TRL logs the same: `sampling/importance_sampling_ratio/{min,mean,max}`
    and `sampling/sampling_logp_difference/{mean,max}`).

    ratio: `sampler_correction`'s output, (N, T) or (N, 1); trainer_logp, sampler_logp, mask: (N, T).
    """
    with torch.no_grad():
        m = mask.bool()
        ratios = ratio[m] if ratio.shape == m.shape else ratio.flatten()
        gap = (trainer_logp.detach() - sampler_logp).abs()
        gaps = gap[m & ~torch.isnan(gap)]

        def extreme(t: torch.Tensor, fn) -> float:
            return float(fn(t)) if t.numel() else math.nan

        return SamplerCorrectionStats(
            num_ratios=int(ratios.numel()),
            ratio_sum=float(ratios.double().sum()),
            ratio_min=extreme(ratios, torch.min),
            ratio_max=extreme(ratios, torch.max),
            num_tokens=int(gaps.numel()),
            logp_gap_sum=float(gaps.double().sum()),
            logp_gap_max=extreme(gaps, torch.max),
        )
