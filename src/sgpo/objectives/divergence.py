"""Per-token divergences between the teacher q (policy *with* the strategy in its context, no grad)
and the student p (policy *without* it), over the vocabulary.

Shapes: N token positions, V vocabulary. Inputs are logits (already divided by the sampling
temperature); outputs are one divergence per position, (N,). Gradients flow into the student logits
only; the teacher is a constant.

Two implementations of each divergence:

- `*_reference`: the plain formula through autograd: the definition the tests trust;
- `token_divergence(...)`: the production path, a `torch.autograd.Function` per divergence with the
  gradient written out (e.g. ∂KL(q‖p)/∂z = p − q). Besides saving autograd's intermediates, it makes
  the property the method relies on exact: where the strategy does not change the next-token
  distribution (q == p), both the divergence and its gradient are exactly 0, not 1e-8.

Divergences (registry `DIVERGENCES`):
    forward_kl        KL(q‖p) = Σ_v q_v (log q_v − log p_v)
    forward_kl_topk   the same over the teacher's top-k tokens plus one tail bucket holding the rest
                      of the mass: buckets b ∈ S ∪ {tail}, q_tail = 1 − Σ_S q, p_tail = 1 − Σ_S p
    reverse_kl        KL(p‖q) = Σ_v p_v (log p_v − log q_v)  (ablation)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- plain references


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast to float32; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def forward_kl_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(q‖p) per position. student_logits, teacher_logits: (N, V) -> (N,)"""
    log_p = F.log_softmax(_upcast(student_logits), dim=-1)
    log_q = F.log_softmax(_upcast(teacher_logits), dim=-1).detach()
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def _topk_buckets(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the k buckets `idx` and of the tail. logits (N, V), idx (N, k) -> (N, k+1)"""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, 1)
    top = logits.gather(-1, idx) - lse  # (N, k)
    rest = logits.scatter(-1, idx, float("-inf"))  # (N, V) with the top-k removed
    tail = torch.logsumexp(rest, dim=-1, keepdim=True) - lse  # (N, 1)
    return torch.cat([top, tail], dim=-1)


def forward_kl_topk_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int) -> torch.Tensor:
    """KL over the teacher's top-k tokens plus a tail bucket. (N, V), (N, V) -> (N,)"""
    s, t = _upcast(student_logits), _upcast(teacher_logits).detach()
    idx = t.topk(min(k, t.shape[-1] - 1), dim=-1).indices  # (N, k)
    log_q = _topk_buckets(t, idx)
    log_p = _topk_buckets(s, idx)
    q = log_q.exp()
    # a bucket with q == 0 contributes 0 (0·log 0 := 0), also when its log is -inf
    return torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q)).sum(-1)


def reverse_kl_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) per position. (N, V), (N, V) -> (N,)"""
    log_p = F.log_softmax(_upcast(student_logits), dim=-1)
    log_q = F.log_softmax(_upcast(teacher_logits), dim=-1).detach()
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# ----------------------------------------------------------------------------- production (explicit gradients)


class _ForwardKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits):  # (N, V), (N, V) -> (N,)
        log_p = F.log_softmax(_upcast(student_logits), dim=-1)
        log_q = F.log_softmax(_upcast(teacher_logits), dim=-1)
        q = log_q.exp()
        kl = (q * (log_q - log_p)).sum(-1)
        ctx.save_for_backward(log_p.exp() - q)  # ∂KL/∂z = p − q
        ctx.dtype = student_logits.dtype
        return kl

    @staticmethod
    def backward(ctx, grad_out):
        (p_minus_q,) = ctx.saved_tensors
        return (grad_out.unsqueeze(-1) * p_minus_q).to(ctx.dtype), None


class _ReverseKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits):  # (N, V), (N, V) -> (N,)
        log_p = F.log_softmax(_upcast(student_logits), dim=-1)
        log_q = F.log_softmax(_upcast(teacher_logits), dim=-1)
        p = log_p.exp()
        diff = log_p - log_q
        kl = (p * diff).sum(-1)
        # ∂/∂z_j Σ_v p_v (log p_v − log q_v) = p_j (log p_j − log q_j − KL)
        ctx.save_for_backward(p * (diff - kl.unsqueeze(-1)))
        ctx.dtype = student_logits.dtype
        return kl

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return (grad_out.unsqueeze(-1) * g).to(ctx.dtype), None


class _ForwardKLTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits, k):  # (N, V), (N, V) -> (N,)
        s, t = _upcast(student_logits), _upcast(teacher_logits)
        idx = t.topk(min(k, t.shape[-1] - 1), dim=-1).indices  # (N, k)
        log_q = _topk_buckets(t, idx)  # (N, k+1)
        log_p = _topk_buckets(s, idx)
        q = log_q.exp()
        kl = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q)).sum(-1)
        # ∂KL/∂z_j = p_j − q_j for j in the top-k;  p_j (1 − q_tail / p_tail) outside it
        p_full = F.softmax(s, dim=-1)  # (N, V)
        tail_factor = 1.0 - q[:, -1:] / log_p[:, -1:].exp().clamp_min(torch.finfo(torch.float32).tiny)
        grad = p_full * tail_factor  # (N, V) — correct outside the top-k
        grad.scatter_(-1, idx, log_p[:, :-1].exp() - q[:, :-1])
        ctx.save_for_backward(grad)
        ctx.dtype = student_logits.dtype
        return kl

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return (grad_out.unsqueeze(-1) * g).to(ctx.dtype), None, None


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Forward KL(q‖p), full vocabulary or (with `topk`) top-k + tail. (N, V), (N, V) -> (N,)"""
    if topk:
        return _ForwardKLTopK.apply(student_logits, teacher_logits.detach(), int(topk))
    return _ForwardKL.apply(student_logits, teacher_logits.detach())


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Reverse KL(p‖q) over the full vocabulary (`topk` is not supported). (N, V), (N, V) -> (N,)"""
    if topk:
        raise ValueError("distill_topk is only defined for forward_kl (the teacher's top-k)")
    return _ReverseKL.apply(student_logits, teacher_logits.detach())


DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
}


def token_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward_kl", topk: int | None = None
) -> torch.Tensor:
    """Divergence `kind` per position. (N, V), (N, V) -> (N,)"""
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown distill_divergence {kind!r}; known: {', '.join(DIVERGENCES)}")
    return DIVERGENCES[kind](student_logits, teacher_logits, topk)
