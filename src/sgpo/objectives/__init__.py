"""SGPO's objectives: pure functions over tensors (no trainer imports), registries by name where the
config dispatches on one (`loss_type` → `AGGREGATIONS`, `distill_divergence` → `DIVERGENCES`,
`instance_weighting` → `INSTANCE_WEIGHTS`).

- `advantages`   group-relative advantages (`scale_rewards` group / batch / none)
- `policy_loss`  clipped surrogate (GRPO family), LUFFY's shaped off-policy term, k3 reference KL
- `divergence`   per-token forward KL (full / top-k + tail) and reverse KL, teacher → student
- `proximal`     the proximal keep-mask on the distillation term and the per-token cap
- `weighting`    adaptive per-problem weights (marginal / deficit / constant) and their EMA
- `aggregation`  per-token → scalar with global normalisers (loss_type grpo / dr_grpo / dapo)
- `lm_head`      log-probs and divergences from hidden states and the LM head (plain path)
- `chunked_head` the same, chunk by chunk with explicit gradients: never holds the N × V logits
                 (`head_implementation: chunked`, the default; `DEFAULT_CHUNK_BYTES`, `default_chunk_size`)
- `importance_sampling`  bounded π_trainer / π_sampler ratios for rollouts from another engine (vLLM)
- `loss`         the whole SGPO loss of a micro-batch: `sgpo_loss(LossInputs, LossConfig) -> LossOutputs`

Each formula is written out next to its function in docs/algorithm.md.
"""

from sgpo.objectives.advantages import group_relative_advantages
from sgpo.objectives.aggregation import AGGREGATIONS, LOSS_TYPE_TO_AGG_MODE, GlobalCounts, aggregate, token_weights
from sgpo.objectives.divergence import (
    DIVERGENCES,
    forward_kl,
    forward_kl_reference,
    forward_kl_topk_reference,
    reverse_kl,
    reverse_kl_reference,
    token_divergence,
)
from sgpo.objectives.importance_sampling import (
    IS_MODES,
    SamplerCorrectionStats,
    sampler_correction,
    sampler_correction_stats,
)
from sgpo.objectives.lm_head import DistillTerms, distill_terms, head_logits, sampled_logps, token_entropy
from sgpo.objectives.loss import (
    DISTILL_TERMS,
    LossConfig,
    LossInputs,
    LossOutputs,
    head_functions,
    select_rows,
    sgpo_loss,
)
from sgpo.objectives.policy_loss import (
    PolicyLossOutput,
    clipped_surrogate,
    clipped_surrogate_grad,
    k3_kl,
    k3_kl_grad,
    sequence_level_logp,
    shaped_off_policy,
    shaped_off_policy_grad,
)
from sgpo.objectives.proximal import cap_per_token, proximal_keep_mask
from sgpo.objectives.weighting import INSTANCE_WEIGHTS, InstanceWeightEMA, ema_update, instance_weights

__all__ = [
    "AGGREGATIONS",
    "DISTILL_TERMS",
    "DIVERGENCES",
    "INSTANCE_WEIGHTS",
    "IS_MODES",
    "LOSS_TYPE_TO_AGG_MODE",
    "DistillTerms",
    "GlobalCounts",
    "InstanceWeightEMA",
    "LossConfig",
    "LossInputs",
    "LossOutputs",
    "PolicyLossOutput",
    "SamplerCorrectionStats",
    "aggregate",
    "cap_per_token",
    "clipped_surrogate",
    "clipped_surrogate_grad",
    "distill_terms",
    "ema_update",
    "forward_kl",
    "forward_kl_reference",
    "forward_kl_topk_reference",
    "group_relative_advantages",
    "head_functions",
    "head_logits",
    "instance_weights",
    "k3_kl",
    "k3_kl_grad",
    "proximal_keep_mask",
    "reverse_kl",
    "reverse_kl_reference",
    "sampler_correction",
    "sampler_correction_stats",
    "select_rows",
    "sampled_logps",
    "sequence_level_logp",
    "sgpo_loss",
    "shaped_off_policy",
    "shaped_off_policy_grad",
    "token_divergence",
    "token_entropy",
    "token_weights",
]
