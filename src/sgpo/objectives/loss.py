"""The whole SGPO loss of one micro-batch, as one function: `sgpo_loss(inputs, config) -> LossOutputs`.

    L = L_RL + λ · Σ_i w_i Σ_{ỹ ∈ guided_i} Σ_t keep_t · min(D_t, cap) / N          (docs/algorithm.md §7)

- L_RL: the clipped surrogate on the autonomous completions (a ratio per token, or per sequence with
  `importance_sampling_level="sequence"`: GSPO), times the sampler-mismatch importance
  weights when there are any, plus β · k3(π_θ ‖ π_ref) (times the ratio ρ with
  `use_bias_correction_kl`, TRL's default), aggregated by `loss_type` with the counts of
  the whole optimizer step (§3);
- D_t: the divergence of the student π_θ(·|x, ỹ_<t) from the teacher π_old(·|x ⊕ s, ỹ_<t) at each
  distilled token (`distill_divergence`: forward_kl, reverse_kl, or imitation = −log π_θ(ỹ_t)) (§4);
- keep_t: the proximal keep-mask, from the student ratio π_θ(ỹ_t)/π_old(ỹ_t) and the direction the
  teacher pulls (§5); w_i: the instance weight of the row's problem (§6); N: the selected guided
  tokens of the whole optimizer step (§7).

Inputs are final hidden states and the LM head, not log-probs: the distillation term needs the
teacher's and the student's whole next-token distributions, which `head` ("chunked", the default:
never holds the tokens × vocabulary logits; or "plain", the reference) computes from them. The
result is this micro-batch's share of the optimizer step's loss: summed over the micro-batches of a
step (and over processes), it is the step's loss however the step was split. Nothing here knows
about the trainer; `tests/test_objectives_loss.py` checks values and gradients derived by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from sgpo.objectives import chunked_head, lm_head
from sgpo.objectives.aggregation import LOSS_TYPE_TO_AGG_MODE, GlobalCounts, token_weights
from sgpo.objectives.divergence import DIVERGENCES
from sgpo.objectives.lm_head import token_entropy
from sgpo.objectives.policy_loss import (
    clipped_surrogate,
    clipped_surrogate_grad,
    k3_kl,
    k3_kl_grad,
    sequence_level_logp,
    shaped_off_policy,
    shaped_off_policy_grad,
)
from sgpo.objectives.proximal import cap_per_token, proximal_keep_mask

Tensor = torch.Tensor

#: distill_divergence values: the divergences of `sgpo.objectives.divergence`, and trajectory imitation
DISTILL_TERMS = tuple(DIVERGENCES) + ("imitation",)


@dataclass(frozen=True)
class LossConfig:
    """The loss's settings (the `SGPOConfig` fields of the same names; see their help)."""

    loss_type: str = "dapo"
    epsilon: float = 0.2
    epsilon_high: float = 0.2
    delta: float | None = None
    beta: float = 0.0
    use_bias_correction_kl: bool = True
    temperature: float = 1.0
    distill_coef: float = 1.0
    distill_divergence: str = "forward_kl"
    distill_topk: int | None = None
    distill_proximal: bool = True
    distill_epsilon_low: float = 0.2
    distill_epsilon_high: float = 0.2
    distill_kl_cap: float | None = None
    policy_shaping_gamma: float = 0.1
    importance_sampling_level: str = "token"
    head: str = "chunked"
    head_chunk_size: int | None = None

    @classmethod
    def from_args(cls, args) -> LossConfig:
        """The loss settings of an `SGPOConfig` (or anything with the same attribute names)."""
        names = {k: getattr(args, k) for k in cls.__dataclass_fields__ if k != "head" and hasattr(args, k)}
        return cls(head=getattr(args, "head_implementation", "chunked"), **names)


@dataclass
class LossInputs:
    """One micro-batch: Na autonomous rows, Nd distilled (guided) rows, C completion positions, H the
    hidden size, V the vocabulary. Masks are 0/1, zero at padding. Every row of `*_hidden` holds the
    final hidden state that predicts the token at that position (the one before it)."""

    # -- LM head of π_θ (the student); the teacher's is the rollout-time snapshot when given
    head_weight: Tensor  # (V, H)
    head_bias: Tensor | None  # (V,)
    # -- RL term: autonomous completions y ~ π_old(·|x), student context x
    auto_hidden: Tensor  # (Na, C, H) with grad
    auto_ids: Tensor  # (Na, C) long, y_t
    auto_mask: Tensor  # (Na, C)
    advantages: Tensor  # (Na,)
    auto_counts: GlobalCounts  # sequences and tokens of the whole optimizer step, all processes
    old_logps: Tensor | None = None  # (Na, C) log π_old(y_t|x, y_<t); None: on-policy (π_old = π_θ, detached)
    ref_logps: Tensor | None = None  # (Na, C) log π_ref(y_t|x, y_<t), for beta > 0
    is_weights: Tensor | None = None  # (Na, C) sampler-mismatch importance weights (no grad); None: 1
    auto_off_policy: Tensor | None = None  # (Na,) bool: rows that are a strong model's response (LUFFY), not a rollout
    # -- distillation term: guided completions ỹ ~ π_old(·|x ⊕ s), scored without the strategy
    distill_hidden: Tensor | None = None  # (Nd, C, H) student, with grad
    distill_ids: Tensor | None = None  # (Nd, C) long, ỹ_t
    distill_mask: Tensor | None = None  # (Nd, C)
    distill_weights: Tensor | None = None  # (Nd,) w_i of each row's problem
    teacher_hidden: Tensor | None = None  # (Nd, C, H) π_old on x ⊕ s ⊕ ỹ, no grad (None for imitation)
    teacher_weight: Tensor | None = None  # (V, H) rollout-time LM head; None: head_weight
    teacher_bias: Tensor | None = None  # (V,) rollout-time LM-head bias; None: head_bias
    distill_old_logps: Tensor | None = None  # (Nd, C) log π_old(ỹ_t|x, ỹ_<t); None: on-policy
    distill_tokens: float = 0.0  # N: selected guided tokens of the whole optimizer step, all processes

    @property
    def has_distill(self) -> bool:
        return self.distill_hidden is not None and self.distill_hidden.shape[0] > 0


#: the fields of `LossInputs` that hold one row per autonomous / distilled sequence (the rest are shared
#: by the micro-batch: the LM heads and the step's normalisers)
AUTO_ROW_FIELDS = (
    "auto_hidden",
    "auto_ids",
    "auto_mask",
    "advantages",
    "old_logps",
    "ref_logps",
    "is_weights",
    "auto_off_policy",
)
DISTILL_ROW_FIELDS = ("distill_hidden", "distill_ids", "distill_mask", "distill_weights", "teacher_hidden", "distill_old_logps")
_PER_ROW_ONLY = ("advantages", "auto_off_policy", "distill_weights")  # (N,): no completion positions


def select_rows(x: LossInputs, auto: Tensor | slice, distill: Tensor | slice, width: int | None = None) -> LossInputs:
    """The inputs of some of the micro-batch's sequences: `auto` of its autonomous rows and `distill`
    of its distilled ones, their first `width` completion positions (all when None). The normalisers
    stay the whole step's, so the loss of the selected rows is their share of the micro-batch's loss:
    `sgpo_loss` of a partition of the rows sums to `sgpo_loss` of all of them."""
    cut = slice(None) if width is None else slice(0, width)
    out = {}
    for names, index in ((AUTO_ROW_FIELDS, auto), (DISTILL_ROW_FIELDS, distill)):
        for name in names:
            value = getattr(x, name)
            if value is not None:
                value = value[index]
                out[name] = value if name in _PER_ROW_ONLY else value[:, cut]
    return replace(x, **out)


@dataclass
class LossOutputs:
    """loss: scalar, this micro-batch's share of the step's loss. metrics: name -> (sum, count) over
    this micro-batch (count 0: a total, reported as is); the trainer adds them up per logging window.
    distill_kl_per_row: (Nd,) Σ_t D_t of each distilled row (no grad), for metrics split by row groups."""

    loss: Tensor
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    distill_kl_per_row: Tensor | None = None


# ----------------------------------------------------------------------------- LM-head paths


def head_functions(name: str) -> tuple[Callable, Callable]:
    """(sampled_logps, distill_terms) of an LM-head path; both share the plain path's signature."""
    if name == "plain":
        return lm_head.sampled_logps, lm_head.distill_terms
    if name == "chunked":
        return chunked_head.sampled_logps, chunked_head.distill_terms
    raise ValueError(f"unknown head_implementation {name!r}; known: chunked, plain")


def _head_kwargs(cfg: LossConfig) -> dict:
    return {"chunk_size": cfg.head_chunk_size} if cfg.head == "chunked" else {}


def _hint(cfg: LossConfig, fn):
    """The chunked path takes the per-token gradient factor of the loss as a speed hint."""
    return {"loss_weights": fn} if cfg.head == "chunked" else {}


# ----------------------------------------------------------------------------- the two terms


def rl_term(x: LossInputs, cfg: LossConfig) -> tuple[Tensor, dict[str, tuple[float, float]]]:
    """L_RL of the micro-batch (its share of the step's aggregate) and its metrics. Rows marked
    `auto_off_policy` (LUFFY's strong responses) take the shaped term −A·f(π_θ), f(p) = p/(p+γ),
    unclipped, instead of the clipped surrogate (docs/algorithm.md, "Baselines")."""
    sampled_logps, _ = head_functions(cfg.head)
    mask = x.auto_mask.float()  # (Na, C)
    sel = mask.bool()
    mode = LOSS_TYPE_TO_AGG_MODE[cfg.loss_type]
    agg = token_weights(mask, mode, x.auto_counts)  # (Na, C): Σ ℓ · agg is this micro-batch's share
    adv = x.advantages.float().unsqueeze(1).expand_as(mask)
    is_w = torch.ones_like(mask) if x.is_weights is None else x.is_weights.float()
    old_tok = None if x.old_logps is None else x.old_logps[sel]
    ref_tok = None if x.ref_logps is None else x.ref_logps[sel]
    adv_tok, agg_tok = adv[sel], (agg * is_w)[sel]
    off = None if x.auto_off_policy is None or not x.auto_off_policy.any() else x.auto_off_policy.unsqueeze(1).expand_as(sel)
    off_tok = None if off is None else off[sel]

    def grad_factor(rows, lp):  # ∂L_RL/∂log π_θ(y_t), chunk by chunk (lets the chunked head finish ∂W early)
        g = clipped_surrogate_grad(
            lp, lp if old_tok is None else old_tok[rows], adv_tok[rows], cfg.epsilon, cfg.epsilon_high, cfg.delta
        )
        if off_tok is not None:
            g = torch.where(off_tok[rows], shaped_off_policy_grad(lp, adv_tok[rows], cfg.policy_shaping_gamma), g)
        if ref_tok is not None:  # β·k3, or β·ρ·k3 with the bias correction: ∂ = β·ρ·(k3 + k3')
            g_kl = k3_kl_grad(lp, ref_tok[rows])
            if cfg.use_bias_correction_kl:
                rho = torch.exp(lp - (lp if old_tok is None else old_tok[rows]))
                g_kl = rho * (g_kl + k3_kl(lp, ref_tok[rows]))
            g = g + cfg.beta * g_kl
        return g * agg_tok[rows]

    sequence = cfg.importance_sampling_level == "sequence"  # GSPO: the token-level hint would not fit
    logp = torch.zeros_like(mask)
    if sel.any():
        tok = sampled_logps(
            x.auto_hidden[sel], x.head_weight, x.auto_ids[sel], cfg.temperature, x.head_bias,
            **_head_kwargs(cfg), **({} if sequence else _hint(cfg, grad_factor)),
        )  # fmt: skip
        logp = logp.masked_scatter(sel, tok.float())
    old = logp.detach() if x.old_logps is None else x.old_logps.float()
    ratio_logp = sequence_level_logp(logp, old, mask) if sequence else logp
    pl = clipped_surrogate(ratio_logp, old, x.advantages.float(), cfg.epsilon, cfg.epsilon_high, cfg.delta)
    per_token = pl.per_token_loss
    if off is not None:
        per_token = torch.where(off, shaped_off_policy(logp, x.advantages.float(), cfg.policy_shaping_gamma), per_token)
        pl.low_clipped, pl.high_clipped = pl.low_clipped & ~off, pl.high_clipped & ~off  # nothing is clipped there
    per_token = per_token * is_w
    n_tok = float(mask.sum())
    metrics: dict[str, tuple[float, float]] = {}
    if x.ref_logps is not None:  # TRL's `kl`: the k3 term as the loss uses it (times ρ with the bias correction)
        kl_ref = k3_kl(logp, x.ref_logps.float())
        if cfg.use_bias_correction_kl:
            kl_ref = kl_ref * torch.exp(ratio_logp - old)
        per_token = per_token + cfg.beta * kl_ref
        metrics["kl"] = (float((kl_ref.detach() * mask).sum()), n_tok)
    loss = (per_token * agg).sum()
    metrics["rl/loss"] = (float(loss.detach()), 0.0)
    # clipped fractions of the tokens, or of the sequences with one ratio per sequence (as TRL counts them)
    low, high, within, count = (
        (pl.low_clipped[:, :1], pl.high_clipped[:, :1], torch.ones_like(pl.low_clipped[:, :1]), float(mask.shape[0]))
        if sequence
        else (pl.low_clipped, pl.high_clipped, sel, n_tok)
    )
    metrics["clip/low"] = (float((low & within).sum()), count)
    metrics["clip/high"] = (float((high & within).sum()), count)
    metrics["clip/region"] = (float(((low | high) & within).sum()), count)
    if sel.any():  # TRL's `entropy`: of the policy's sampling distribution, over the completion tokens
        bias = None if x.head_bias is None else x.head_bias.detach()
        ent = token_entropy(x.auto_hidden[sel].detach(), x.head_weight.detach(), cfg.temperature, bias, cfg.head_chunk_size)
        metrics["entropy"] = (float(ent.sum()), n_tok)
    return loss, metrics


def distill_term(x: LossInputs, cfg: LossConfig) -> tuple[Tensor, dict[str, tuple[float, float]], Tensor]:
    """λ · Σ w_i keep_t min(D_t, cap) / N of the micro-batch, its metrics, and Σ_t D_t per row (Nd,)."""
    sampled_logps, distill_terms = head_functions(cfg.head)
    sel = x.distill_mask.bool()  # (Nd, C)
    s_h, targets = x.distill_hidden[sel], x.distill_ids[sel]  # (M, H), (M,)
    w_tok = x.distill_weights.float().unsqueeze(1).expand(sel.shape)[sel]  # (M,)
    old_tok = None if x.distill_old_logps is None else x.distill_old_logps[sel].float()
    cap = cfg.distill_kl_cap

    def keep_mask(s_logp, t_logp, rows=slice(None)):
        if not cfg.distill_proximal:
            return torch.ones_like(s_logp)
        old = s_logp.detach() if old_tok is None else old_tok[rows]
        return proximal_keep_mask(s_logp, old, t_logp, cfg.distill_epsilon_low, cfg.distill_epsilon_high)

    if cfg.distill_divergence == "imitation":
        # NLL of the guided tokens (trajectory imitation, an ablation): "the teacher" wants every token up

        def nll_grad(rows, lp):  # ∂/∂log π_θ(ỹ_t) of Σ w·keep·(−log π_θ)
            g = -w_tok[rows] * keep_mask(lp, torch.zeros_like(lp), rows)
            return g if cap is None else g * (-lp <= cap)

        s_logp = sampled_logps(
            s_h, x.head_weight, targets, cfg.temperature, x.head_bias, **_head_kwargs(cfg), **_hint(cfg, nll_grad)
        ).float()
        div, t_logp = -s_logp, torch.zeros_like(s_logp)
    else:

        def distill_grad(rows, terms):  # ∂(Σ w·keep·min(D, cap))/∂D per token
            g = w_tok[rows] * keep_mask(terms.student_logp, terms.teacher_logp, rows)
            return g if cap is None else g * (terms.divergence <= cap)

        terms = distill_terms(
            s_h, x.teacher_hidden[sel], x.head_weight, targets, teacher_weight=x.teacher_weight,
            teacher_bias=x.teacher_bias, kind=cfg.distill_divergence, topk=cfg.distill_topk,
            temperature=cfg.temperature, bias=x.head_bias, **_head_kwargs(cfg), **_hint(cfg, distill_grad),
        )  # fmt: skip
        div, s_logp, t_logp = terms.divergence.float(), terms.student_logp.float(), terms.teacher_logp.float()
    keep = keep_mask(s_logp, t_logp)
    loss = cfg.distill_coef * (w_tok * keep * cap_per_token(div, cap)).sum() / max(x.distill_tokens, 1.0)
    n = float(sel.sum())
    metrics = {
        "distill/loss": (float(loss.detach()), 0.0),
        "distill/kl": (float(div.detach().sum()), n),
        "distill/masked_frac": (float((1 - keep).sum()), n),
        "distill/tokens": (n, 0.0),
    }
    per_row = torch.zeros(sel.shape[0], dtype=div.dtype, device=div.device).index_add_(0, sel.nonzero()[:, 0], div.detach())
    return loss, metrics, per_row


def sgpo_loss(inputs: LossInputs, config: LossConfig) -> LossOutputs:
    """L_RL + the distillation term for one micro-batch (see the module docstring).

    The result always depends on every tensor that carries gradient, with a zero coefficient when
    the micro-batch has nothing to train on (every token masked, no distilled row): backward then
    gives a zero gradient instead of failing, and under DDP every process still reduces gradients.
    """
    if config.distill_divergence not in DISTILL_TERMS:
        raise ValueError(f"unknown distill_divergence {config.distill_divergence!r}; known: {', '.join(DISTILL_TERMS)}")
    loss, metrics = rl_term(inputs, config)
    per_row = None
    if inputs.has_distill and config.distill_coef > 0:
        d_loss, d_metrics, per_row = distill_term(inputs, config)
        loss = loss + d_loss
        metrics.update(d_metrics)
    anchor = inputs.auto_hidden.sum() + inputs.head_weight.sum()
    if inputs.head_bias is not None:
        anchor = anchor + inputs.head_bias.sum()
    if inputs.distill_hidden is not None:
        anchor = anchor + inputs.distill_hidden.sum()
    return LossOutputs(loss + 0.0 * anchor, metrics, per_row)
