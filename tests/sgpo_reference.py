"""A plain, trainer-free reference of one SGPO optimizer step, for the trainer's wiring tests.

Everything the trainer batches, pads, chunks and splits is done here the slow and obvious way: one
unpadded sequence at a time through the model's own `logits`, every formula of docs/algorithm.md
written out once with Python loops over problems and completions. The trainer's update (SGD, lr 1,
no clipping of the gradient norm, so the update is the gradient) must equal the gradient of this
loss. Nothing here imports from `sgpo` except the data the trainer was given, so a bug in the
trainer's wiring cannot be shared by the reference.

Notation (docs/algorithm.md): problem i with prompt x_i and strategy s_i; autonomous completions
y_ij with rewards r_ij, guided completions ỹ_ik with rewards r̃_ik; π_θ the policy being trained,
π_old the policy that sampled (the teacher is π_old conditioned on the strategy), π_ref the
reference model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Completion:
    ids: list[int]  # the completion's tokens (EOS included when it has one)
    reward: float
    truncated: bool = False  # cut at max_completion_length (no EOS)
    off_policy: bool = False  # a strong model's response in the autonomous group (LUFFY), not a rollout


@dataclass
class Problem:
    prompt: list[int]  # x, the autonomous prompt
    guided_prompt: list[int] | None  # x ⊕ s, None when the problem has no strategy
    auto: list[Completion] = field(default_factory=list)
    guided: list[Completion] = field(default_factory=list)


@dataclass
class RefConfig:
    loss_type: str = "dapo"
    temperature: float = 1.0
    epsilon: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.0
    use_bias_correction_kl: bool = True
    distill_coef: float = 1.0
    distill_on: str = "correct"
    distill_divergence: str = "forward_kl"
    distill_proximal: bool = True
    distill_epsilon_low: float = 0.2
    distill_epsilon_high: float = 0.2
    distill_kl_cap: float | None = None
    instance_weighting: str = "marginal"
    correct_reward_threshold: float = 1.0
    mask_truncated_completions: bool = False
    max_completion_length: int = 1
    scale_rewards: str = "group"
    policy_shaping_gamma: float = 0.1


def log_probs(model, context: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """log softmax(model(context ⊕ completion) / T) at the completion's positions: (len(completion), V)"""
    ids = torch.tensor([context + completion])
    logits = model(input_ids=ids).logits[0, len(context) - 1 : len(context) - 1 + len(completion)]
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def instance_weight(mode: str, acc_auto: float, acc_guided: float) -> float:
    if mode == "marginal":
        return min(max(acc_guided - acc_auto, 0.0), 1.0)
    if mode == "deficit":
        return (1.0 - acc_auto) * (1.0 if acc_guided > 0 else 0.0)
    return 1.0


def advantages(rewards: list[float], scale: str) -> list[float]:
    mean = sum(rewards) / len(rewards)
    if scale == "none":
        return [r - mean for r in rewards]
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1)) if len(rewards) > 1 else 0.0
    return [(r - mean) / (std + 1e-4) for r in rewards]


def weights(problems: list[Problem], cfg: RefConfig) -> list[float | None]:
    """w_i per problem (None without guided completions)."""
    out = []
    for p in problems:
        if not p.guided:
            out.append(None)
            continue
        ok = lambda cs: sum(c.reward >= cfg.correct_reward_threshold for c in cs) / len(cs)  # noqa: E731
        out.append(instance_weight(cfg.instance_weighting, ok(p.auto), ok(p.guided)))
    return out


def sgpo_loss(model, old_model, ref_model, problems: list[Problem], cfg: RefConfig) -> torch.Tensor:
    """L = L_RL + λ Σ_i w_i Σ_k Σ_t keep_t · min(KL_t, cap) / N over one whole optimizer step."""
    T = cfg.temperature
    used = lambda c: not (cfg.mask_truncated_completions and c.truncated)  # noqa: E731

    # ---- RL term: clipped surrogate on the autonomous completions
    rl_terms: list[tuple[torch.Tensor, int]] = []  # (Σ_t ℓ_t of one completion, its token count)
    for p in problems:
        adv = advantages([c.reward for c in p.auto], cfg.scale_rewards)
        for c, a in zip(p.auto, adv):
            if not used(c):
                continue
            lp_all = log_probs(model, p.prompt, c.ids, T)
            lp = lp_all[range(len(c.ids)), c.ids]
            with torch.no_grad():
                old = log_probs(old_model, p.prompt, c.ids, T)[range(len(c.ids)), c.ids]
            ratio = torch.exp(lp - old)
            per_tok = -torch.min(ratio * a, torch.clamp(ratio, 1 - cfg.epsilon, 1 + cfg.epsilon_high) * a)
            if c.off_policy:  # LUFFY: −A·f(π_θ), f(p) = p/(p+γ), no ratio, no clip
                p_tok = torch.exp(lp)
                per_tok = -a * p_tok / (p_tok + cfg.policy_shaping_gamma)
            if cfg.beta > 0:
                with torch.no_grad():
                    ref = log_probs(ref_model, p.prompt, c.ids, T)[range(len(c.ids)), c.ids]
                k3 = torch.exp(ref - lp) - (ref - lp) - 1
                per_tok = per_tok + cfg.beta * (k3 * ratio if cfg.use_bias_correction_kl else k3)
            rl_terms.append((per_tok.sum(), len(c.ids)))
    n_seq = len(rl_terms)
    n_tok = sum(n for _, n in rl_terms)
    if cfg.loss_type == "grpo":
        rl = sum(s / n for s, n in rl_terms) / max(n_seq, 1)
    elif cfg.loss_type == "dr_grpo":
        rl = sum(s for s, _ in rl_terms) / max(n_seq * cfg.max_completion_length, 1)
    else:
        rl = sum(s for s, _ in rl_terms) / max(n_tok, 1)

    # ---- distillation term: teacher = π_old with the strategy, student = π_θ without it
    if cfg.distill_coef == 0:
        return rl
    w = weights(problems, cfg)
    distilled: list[tuple[float, Problem, Completion]] = []
    for p, wi in zip(problems, w):
        for c in p.guided:
            correct = c.reward >= cfg.correct_reward_threshold
            if used(c) and (cfg.distill_on == "all" or correct):
                distilled.append((wi, p, c))
    N = sum(len(c.ids) for _, _, c in distilled)  # every selected token, w_i = 0 included
    total = torch.zeros(())
    for wi, p, c in distilled:
        if wi == 0:
            continue
        idx = range(len(c.ids))
        log_p = log_probs(model, p.prompt, c.ids, T)
        with torch.no_grad():
            log_q = log_probs(old_model, p.guided_prompt, c.ids, T)
            old = log_probs(old_model, p.prompt, c.ids, T)[idx, c.ids]
        if cfg.distill_divergence == "forward_kl":
            d = (log_q.exp() * (log_q - log_p)).sum(-1)
            teacher = log_q[idx, c.ids]
        elif cfg.distill_divergence == "reverse_kl":
            d = (log_p.exp() * (log_p - log_q)).sum(-1)
            teacher = log_q[idx, c.ids]
        else:  # imitation: NLL; "the teacher" wants every token up
            d = -log_p[idx, c.ids]
            teacher = torch.zeros(len(c.ids))
        keep = torch.ones(len(c.ids))
        if cfg.distill_proximal:
            with torch.no_grad():
                ratio = torch.exp(log_p[idx, c.ids] - old)
                drop = ((teacher > old) & (ratio > 1 + cfg.distill_epsilon_high)) | (
                    (teacher < old) & (ratio < 1 - cfg.distill_epsilon_low)
                )
                keep = (~drop).float()
        if cfg.distill_kl_cap is not None:
            d = torch.clamp(d, max=cfg.distill_kl_cap)
        total = total + wi * (keep * d).sum()
    return rl + cfg.distill_coef * total / max(N, 1)


def reference_gradient(model, old_model, ref_model, problems: list[Problem], cfg: RefConfig) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = sgpo_loss(model, old_model, ref_model, problems, cfg)
    if loss.requires_grad:
        loss.backward()
    grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads
