"""Memory-bounded LM-head quantities: the chunked drop-in for `sgpo.objectives.lm_head`.

`sampled_logps` and `distill_terms` here take and return exactly what the plain versions in
`sgpo.objectives.lm_head` do (plus a `chunk_size` keyword), but never hold more than one chunk of
logits: the N positions are walked `chunk_size` rows at a time, each chunk's student and teacher
logits are computed from the hidden states and the LM-head weight into reused float32 buffers, and
everything per position is reduced before the next chunk. Nothing of size N × V is ever allocated.

Gradients (custom `torch.autograd.Function`s, formulas written out; z = logits / temperature):

    forward_kl   ∂KL(q‖p)/∂z = p − q
    top-k + tail ∂/∂z_j = p_j − q_j in the teacher's top-k;  p_j (1 − q_tail / p_tail) outside it
    reverse_kl   ∂KL(p‖q)/∂z_j = p_j (log p_j − log q_j − KL)
    log p(y)     ∂/∂z = onehot(y) − p

  and for the LM head h ↦ z = (h Wᵀ + b) / T:  ∂h = G W / T,  ∂W = Gᵀ h / T,  ∂b = Σ_rows G / T,
  where row n of G is  g_div[n] · ∂div_n/∂z_n + g_logp[n] · ∂logp_n/∂z_n  and g_div, g_logp are the
  per-position gradients autograd hands to backward.

Where each piece is computed, and why:

- The gradient w.r.t. the *student hidden states* of the divergence is computed in the forward
  pass, chunk by chunk, as fused linear-cross-entropy kernels do: row n of ∂div/∂h does not depend
  on the incoming gradient except through the scalar g_div[n], so backward only scales the saved
  (N, H) rows. With a frozen LM head (LoRA, `requires_grad=False`) backward recomputes nothing.
- The gradient w.r.t. the *weight* cannot be finished in the forward pass: ∂W = Σ_n g_div[n] ·
  (∂div_n/∂z_n)ᵀ h_n needs the per-position weights g_div[n], which the trainer only decides after
  this call (instance weights, the proximal mask from `student_logp`, the global token count), and
  a (V, H) sum accumulated with g ≡ 1 cannot be reweighted afterwards without the N × V rows of G.
  So backward recomputes the chunk logits — only for positions whose incoming gradient is non-zero
  (masked and zero-weight tokens cost nothing) — and accumulates ∂W (and ∂b) in float32 with one
  `addmm_` per chunk. The teacher side needs no recomputation for top-k (its top-k indices and
  p_top − q_top are saved, (N, k) each); forward and reverse KL recompute the teacher logits too.
- Unless the caller says how it will weight the positions: with `loss_weights=` (a tensor, or a
  callable evaluated chunk by chunk on the chunk's divergence and log-probs, as the trainer's
  instance weight × proximal mask is), ∂W and ∂b are accumulated in the forward pass with those
  weights, and backward only scales them — after checking that the gradient that arrived is
  proportional to the weights given; if it is not, it recomputes as above, so the hint can make
  the call faster but never wrong.
- The gradient through `student_logp` (the trainer uses it only, detached, for the proximal mask)
  is handled in the same backward loop: when autograd passes no (or an all-zero) gradient for it,
  it costs nothing; when it is used, the affected rows' hidden gradients are recomputed from the
  combined G (one extra matmul per chunk).

Memory, beyond the inputs: three (chunk, V) float32 buffers in the forward pass (two in backward),
the saved per-position statistics ((N,) log-normalisers; for top-k (N, k) indices and gradients), the
saved hidden-state gradient (N, H) in float32, and in backward the (V, H) float32 weight-gradient
accumulator (which becomes `weight.grad`; it is the only weight-sized tensor). Compute: the plain
path does 4 matmuls of N·H·V (student and teacher logits, ∂h, ∂W); this one does 6 for the
positions that carry gradient (the logits twice), or 4 with `loss_weights`, and never touches
N × V memory, which on CPU is where the plain path spends much of its time (see
benchmarks/kl_memory.py and docs/performance.md). With `loss_weights`, the (V, H) float32
accumulator exists from the forward pass on.

Numerics: logits are computed in the weight's dtype as `F.linear` does (so half-precision matmuls
match the plain path) and all softmax math is in float32 (float64 stays float64). Where the
teacher's and the student's hidden states and LM heads are identical, the divergence and its
gradients are exactly 0: both sides go through the same operations on the same values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sgpo.objectives.divergence import DIVERGENCES
from sgpo.objectives.lm_head import DistillTerms

#: Bytes of one (chunk, V) float32 buffer when `chunk_size` is not given (three are live at once).
DEFAULT_CHUNK_BYTES = 1 << 27  # 128 MiB -> 220 rows at V = 151,936; 1,048 rows at V = 32,000


def default_chunk_size(vocab_size: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk such that one (chunk, V) float32 buffer takes about `chunk_bytes`."""
    return max(1, chunk_bytes // (4 * max(1, vocab_size)))


# ----------------------------------------------------------------------------- small helpers


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax math dtype: half precision is upcast to float32 (as `divergence._upcast` does)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _logits_into(
    out: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """out (c, V) <- (hidden Wᵀ + b) / T, hidden (c, H). Matmul in the weight's dtype, as `F.linear`."""
    if hidden.dtype == out.dtype and weight.dtype == out.dtype:
        if temperature != 1.0:  # divide the (c, H) rows, not the (c, V) logits: one pass fewer
            hidden = hidden / temperature
            bias = None if bias is None else bias / temperature
        if bias is None:
            torch.mm(hidden, weight.t(), out=out)
        else:
            torch.addmm(bias.to(out.dtype), hidden, weight.t(), out=out)
        return out
    out.copy_(F.linear(hidden, weight, bias))  # half precision: the matmul as the plain path does it
    return out.div_(temperature) if temperature != 1.0 else out


def _exp_shifted(src: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out <- exp(src − max), returns (max, Σ exp) per row, both (c, 1); `out` may be `src`."""
    m = src.amax(-1, keepdim=True)
    torch.sub(src, m, out=out).exp_()
    return m, out.sum(-1, keepdim=True)


def _add_onehot_(g: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """g[n, targets[n]] += scale[n]; targets (c,), scale (c, 1)."""
    return g.scatter_add_(-1, targets.unsqueeze(-1), scale.to(g.dtype))


def _row_blocks(n: int, rows: torch.Tensor | None, chunk: int):
    """Chunks of positions: slices of 0..n when `rows` is None, else index tensors into `rows`."""
    if rows is None:
        for r0 in range(0, n, chunk):
            yield slice(r0, min(n, r0 + chunk))
    else:
        for r0 in range(0, rows.numel(), chunk):
            yield rows[r0 : r0 + chunk]


def _block_len(sel) -> int:
    return sel.stop - sel.start if isinstance(sel, slice) else sel.numel()


def _active_rows(mask: torch.Tensor) -> torch.Tensor | None:
    """Indices of the True rows, or None when every row is active (then slices avoid gathers)."""
    rows = mask.nonzero().squeeze(-1)
    return None if rows.numel() == mask.numel() else rows


def _grad_to_hidden(
    grad: torch.Tensor, weight: torch.Tensor, temperature: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """∂/∂hidden = G W / T. G (c, V) in the compute dtype -> (c, H) in the compute dtype."""
    if weight.dtype == grad.dtype:
        res = torch.mm(grad, weight) if out is None else torch.mm(grad, weight, out=out)
    else:  # half-precision weight: the matmul in its dtype, as autograd through `F.linear` does
        res = torch.mm(grad.to(weight.dtype), weight).to(grad.dtype)
        if out is not None:
            res = out.copy_(res)
    return res.div_(temperature) if temperature != 1.0 else res


# ----------------------------------------------------------------------------- per-chunk divergence math (forward)
# Each takes A = student logits and B = teacher logits of one chunk (c, V) and D, a (c, V) scratch
# buffer; all three are overwritten. Returns (divergence (c,), lse_s (c, 1), lse_t (c, 1), extra
# per-row statistics backward needs, and — when `want_grad` — the buffer now holding ∂div/∂z).


def _forward_kl_chunk(A, B, D, want_grad):
    # KL(q‖p) = Σ_v q_v (t_v − s_v) + lse_s − lse_t   (Σ q = 1; t − s is exactly 0 where they agree)
    m_s, z_s = _exp_shifted(A, D)  # D = exp(s − m_s) = p · z_s
    torch.sub(B, A, out=A)  # A = t − s
    m_t, z_t = _exp_shifted(B, B)  # B = exp(t − m_t) = q · z_t
    lse_s, lse_t = m_s + z_s.log(), m_t + z_t.log()
    grad = None
    if want_grad:  # p − q, before B is reused for the product below
        B.div_(z_t)  # q
        grad = D.div_(z_s).sub_(B)
        kl = B.mul_(A).sum(-1)
    else:
        kl = B.mul_(A).sum(-1) / z_t.squeeze(-1)
    return kl + (lse_s - lse_t).squeeze(-1), lse_s, lse_t, (), grad


def _reverse_kl_chunk(A, B, D, want_grad):
    # KL(p‖q) = Σ_v p_v (s_v − t_v) + lse_t − lse_s
    m_s, z_s = _exp_shifted(A, D)  # D = p · z_s
    torch.sub(B, A, out=A)  # A = t − s
    m_t, z_t = _exp_shifted(B, B)  # only z_t is needed; B is scratch from here on
    lse_s, lse_t = m_s + z_s.log(), m_t + z_t.log()
    D.div_(z_s)  # p
    kl = (lse_t - lse_s).squeeze(-1) - torch.mul(D, A, out=B).sum(-1)
    grad = None
    if want_grad:  # p (log p − log q − KL) = −p ⊙ (t − s + lse_s − lse_t + KL)
        grad = A.add_(lse_s - lse_t + kl.unsqueeze(-1)).mul_(D).neg_()
    return kl, lse_s, lse_t, (kl.unsqueeze(-1),), grad


def _forward_kl_topk_chunk(A, B, D, want_grad, want_stats, k):
    # Buckets: the teacher's top-k tokens and one tail. Tail sums are taken over the tail itself
    # (not as 1 − Σ top), so a tiny tail keeps its relative precision, as the plain path's does.
    t_top, idx = B.topk(k, dim=-1)  # (c, k), sorted: t_top[:, :1] is the row max
    m_t = t_top[:, :1]
    B.sub_(m_t).exp_()  # q · z_t
    z_t = B.sum(-1, keepdim=True)
    r_t = B.scatter_(-1, idx, 0.0).sum(-1, keepdim=True)  # tail mass · z_t
    s_top = A.gather(-1, idx)
    m_s, z_s = _exp_shifted(A, A)  # A = p · z_s
    r_s = A.scatter_(-1, idx, 0.0).sum(-1, keepdim=True)  # A now p · z_s outside the top-k, 0 in it
    lse_s, lse_t = m_s + z_s.log(), m_t + z_t.log()
    log_q = torch.cat([t_top - lse_t, r_t.log() - z_t.log()], dim=-1)  # (c, k+1)
    log_p = torch.cat([s_top - lse_s, r_s.log() - z_s.log()], dim=-1)
    q = log_q.exp()
    # a bucket with q == 0 contributes 0 (0 · log 0 := 0), also when its log is −inf
    kl = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q)).sum(-1)
    extra, grad = (), None
    if want_grad or want_stats:
        tail_factor = 1.0 - q[:, -1:] / log_p[:, -1:].exp().clamp_min(torch.finfo(torch.float32).tiny)
        g_top = log_p[:, :-1].exp() - q[:, :-1]  # p_j − q_j on the top-k
        extra = (idx, tail_factor, g_top)
        if want_grad:
            grad = A.mul_(tail_factor / z_s).scatter_(-1, idx, g_top)
    return kl, lse_s, lse_t, extra, grad


def _check_kind(kind: str, topk: int | None) -> str:
    """The plan ('forward_kl', 'forward_kl_topk' or 'reverse_kl'); the plain path's error messages."""
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown distill_divergence {kind!r}; known: {', '.join(DIVERGENCES)}")
    if topk and kind != "forward_kl":
        raise ValueError("distill_topk is only defined for forward_kl (the teacher's top-k)")
    if topk is not None and topk < 0:
        raise ValueError(f"distill_topk must be a positive number of tokens, got {topk}")
    return "forward_kl_topk" if topk else kind


# ----------------------------------------------------------------------------- per-chunk gradients (backward)


def _recompute_grad(plan, A, B, stats, sel, g_div, g_logp, targets):
    """Rows `sel` of G = g_div ∂div/∂z + g_logp ∂log p(y)/∂z, from recomputed logits.

    A holds the student logits of the rows; B the teacher's (forward/reverse KL when g_div is given)
    or is scratch; g_div, g_logp are (c, 1) or None (not both); stats = (lse_s, lse_t, *extra), each
    (N, ·). Returns (buffer holding G', row_scale) with G = row_scale ⊙ G': when only one incoming
    gradient is used, G' is left unscaled and the caller scales the (c, H) hidden rows instead of
    the (c, V) buffer.
    """
    lse_s = stats[0][sel]
    if g_div is None:  # log p(y) only: onehot − p
        A.sub_(lse_s).exp_().neg_()
        return _add_onehot_(A, targets, torch.ones_like(g_logp)), g_logp
    if plan == "forward_kl":  # p − q
        B.sub_(stats[1][sel]).exp_()
        A.sub_(lse_s).exp_()
        if g_logp is None:
            return A.sub_(B), g_div
        # g_div (p − q) + g_logp (onehot − p) = (g_div − g_logp) p − g_div q + g_logp onehot
        A.mul_(g_div - g_logp).sub_(B.mul_(g_div))
        return _add_onehot_(A, targets, g_logp), None
    if plan == "reverse_kl":  # −p ⊙ (t − s + lse_s − lse_t + KL)
        B.sub_(A)  # t − s
        A.sub_(lse_s).exp_()  # p
        B.add_(lse_s - stats[1][sel] + stats[2][sel]).mul_(A)  # = −∂KL/∂z
        if g_logp is None:
            return B, -g_div
        B.mul_(-g_div).sub_(A.mul_(g_logp))
        return _add_onehot_(B, targets, g_logp), None
    # forward_kl_topk: p · tail_factor outside the top-k, p_j − q_j (saved) on it; no teacher logits
    _, _, idx, tail_factor, g_top = stats
    A.sub_(lse_s).exp_()  # p
    if g_logp is None:
        return A.mul_(tail_factor[sel]).scatter_(-1, idx[sel], g_top[sel]), g_div
    torch.mul(A, tail_factor[sel], out=B).scatter_(-1, idx[sel], g_top[sel]).mul_(g_div)
    B.sub_(A.mul_(g_logp))
    return _add_onehot_(B, targets, g_logp), None


def _accumulate_head_grads(dW, db, G, hidden, scale, temperature, first):
    """∂W += Gᵀ (scale ⊙ h) / T and ∂b += Gᵀ scale / T in float32; the first call writes ∂W
    (beta = 0 ignores its uninitialised contents: no (V, H) zero fill). G (c, V), scale (c, 1) or None."""
    inv_t = 1.0 / temperature
    if dW is not None:
        rows_h = hidden.to(G.dtype) * (inv_t if scale is None else scale * inv_t)
        torch.addmm(dW, G.t(), rows_h, beta=0.0 if first else 1.0, out=dW)
    if db is not None:
        db.add_(G.sum(0) if scale is None else torch.mv(G.t(), scale.squeeze(-1)), alpha=inv_t)


def _weight_grads(
    plan,
    n,
    rows,
    chunk,
    s_hidden,
    t_hidden,
    weight,
    t_weight,
    bias,
    t_bias,
    targets,
    stats,
    g_div,
    g_logp,
    temperature,
    need_w,
    need_b,
    grad_h,
):
    """Walk the active rows again: accumulate ∂W, ∂b (float32) and, when g_logp is used, fix those
    rows of grad_h (replaced by the combined G's hidden gradient when g_div is in G, else added to).
    Returns (dW, db)."""
    dt = stats[0].dtype
    dev = s_hidden.device
    v, hdim = weight.shape
    dW = torch.empty(v, hdim, dtype=dt, device=dev) if need_w else None
    db = torch.zeros(v, dtype=dt, device=dev) if need_b else None
    count = n if rows is None else rows.numel()
    c = min(chunk, count)
    A = torch.empty(c, v, dtype=dt, device=dev)
    B = (
        torch.empty(c, v, dtype=dt, device=dev)
        if (g_div is not None and (plan != "forward_kl_topk" or g_logp is not None))
        else None
    )
    for i, sel in enumerate(_row_blocks(n, rows, c)):
        k = _block_len(sel)
        a, b = A[:k], (B[:k] if B is not None else None)
        hs = s_hidden[sel]
        _logits_into(a, hs, weight, bias, temperature)
        gd = g_div[sel].unsqueeze(-1).to(dt) if g_div is not None else None
        gl = g_logp[sel].unsqueeze(-1).to(dt) if g_logp is not None else None
        if gd is not None and plan in ("forward_kl", "reverse_kl"):
            _logits_into(b, t_hidden[sel], t_weight, t_bias, temperature)
        G, scale = _recompute_grad(plan, a, b, stats, sel, gd, gl, targets[sel])
        _accumulate_head_grads(dW, db, G, hs, scale, temperature, first=i == 0)
        if gl is not None and grad_h is not None:
            dh = _grad_to_hidden(G, weight, temperature)
            dh = dh if scale is None else dh.mul_(scale)
            if gd is not None:
                grad_h[sel] = dh
            else:
                grad_h[sel] += dh
    return dW, db


def _nonzero_or_none(g: torch.Tensor | None) -> torch.Tensor | None:
    """An incoming gradient that is absent or all zero does no work."""
    return None if g is None or not bool(g.any()) else g


def _hint_rows(hint, sel: slice, chunk_values, dtype, device) -> torch.Tensor:
    """The caller's loss weights for rows `sel`: hint[sel], or hint(sel, chunk_values) for a callable. (c,)"""
    k = _block_len(sel)
    w = hint(sel, chunk_values) if callable(hint) else hint[sel]
    w = torch.as_tensor(w, dtype=dtype, device=device).reshape(-1)
    if w.numel() != k:
        raise ValueError(f"loss_weights gave {w.numel()} weights for positions {sel.start}:{sel.stop}; expected {k}")
    return w


def _proportional(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """s such that g == s · w to rounding (the loss was Σ s·w·x), else None."""
    k = int(w.abs().argmax())
    if w[k] == 0:
        return None
    s = g[k] / w[k]
    tol = 8 * torch.finfo(g.dtype).eps * float(g.abs().max())
    return s if float((g - s * w).abs().max()) <= tol else None


def _take_hint(ctx):
    """The forward pass's finished (∂W, ∂b, weights), once: a second backward (retain_graph) recomputes."""
    hint, ctx.hint = getattr(ctx, "hint", None), None
    return hint


# ----------------------------------------------------------------------------- autograd Functions


class _ChunkedDistill(torch.autograd.Function):
    """(student_hidden (N, H), teacher_hidden (N, H), weight (V, H), teacher_weight (V, H), bias (V,)
    or None, teacher_bias, targets (N,)) -> (divergence, student_logp, teacher_logp), each (N,)."""

    @staticmethod
    def forward(
        ctx, s_hidden, t_hidden, weight, t_weight, bias, t_bias, targets, plan, topk, temperature, chunk, compute_grad, hint
    ):
        n, v = s_hidden.shape[0], weight.shape[0]
        dt, dev = _compute_dtype(weight.dtype), s_hidden.device
        want_dh = compute_grad and ctx.needs_input_grad[0]
        hinted = compute_grad and hint is not None and (ctx.needs_input_grad[2] or ctx.needs_input_grad[4])
        div = torch.empty(n, dtype=dt, device=dev)
        s_logp = torch.empty(n, dtype=dt, device=dev)
        t_logp = torch.empty(n, dtype=dt, device=dev)
        dh = torch.empty(n, s_hidden.shape[1], dtype=dt, device=dev) if want_dh else None
        if hinted:  # the caller's weights are known chunk by chunk: finish ∂W, ∂b here
            coefs = torch.empty(n, dtype=dt, device=dev)
            dW = torch.empty(v, s_hidden.shape[1], dtype=dt, device=dev) if ctx.needs_input_grad[2] else None
            db = torch.zeros(v, dtype=dt, device=dev) if ctx.needs_input_grad[4] else None
        c = max(1, min(chunk, n))
        A, B, D = (torch.empty(c, v, dtype=dt, device=dev) for _ in range(3))
        blocks: list[tuple] = []
        for sel in _row_blocks(n, None, c):
            k = _block_len(sel)
            a, b, d = A[:k], B[:k], D[:k]
            _logits_into(a, s_hidden[sel], weight, bias, temperature)
            _logits_into(b, t_hidden[sel], t_weight, t_bias, temperature)
            tgt = targets[sel].unsqueeze(-1)
            s_y, t_y = a.gather(-1, tgt), b.gather(-1, tgt)  # (k, 1)
            want_g = want_dh or hinted
            if plan == "forward_kl":
                kl, lse_s, lse_t, extra, grad = _forward_kl_chunk(a, b, d, want_g)
            elif plan == "reverse_kl":
                kl, lse_s, lse_t, extra, grad = _reverse_kl_chunk(a, b, d, want_g)
            else:
                kl, lse_s, lse_t, extra, grad = _forward_kl_topk_chunk(a, b, d, want_g, compute_grad, min(topk, v - 1))
            div[sel] = kl
            s_logp[sel] = (s_y - lse_s).squeeze(-1)
            t_logp[sel] = (t_y - lse_t).squeeze(-1)
            if want_dh:
                _grad_to_hidden(grad, weight, temperature, out=dh[sel])
            if hinted:
                coefs[sel] = w = _hint_rows(hint, sel, DistillTerms(div[sel], s_logp[sel], t_logp[sel]), dt, dev)
                _accumulate_head_grads(dW, db, grad, s_hidden[sel], w.unsqueeze(-1), temperature, first=sel.start == 0)
            if compute_grad:
                blocks.append((lse_s, lse_t, *extra))
        del A, B, D
        ctx.mark_non_differentiable(t_logp)
        if compute_grad:
            stats = tuple(torch.cat(parts) for parts in zip(*blocks))
            ctx.save_for_backward(s_hidden, t_hidden, weight, t_weight, bias, t_bias, targets, dh, *stats)
            ctx.plan, ctx.temperature, ctx.chunk = plan, temperature, chunk
            ctx.hint = (dW, db, coefs) if hinted and n > 0 else None
        ctx.set_materialize_grads(False)
        return div, s_logp, t_logp

    @staticmethod
    def backward(ctx, g_div, g_logp, _g_teacher):
        s_hidden, t_hidden, weight, t_weight, bias, t_bias, targets, dh, *stats = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[4]
        g_div, g_logp = _nonzero_or_none(g_div), _nonzero_or_none(g_logp)
        n = targets.shape[0]
        hint = _take_hint(ctx)
        scale = _proportional(g_div, hint[2]) if hint is not None and g_div is not None else None
        grad_h = grad_w = grad_b = None
        if need_h:  # the divergence part was computed in the forward pass
            grad_h = dh * g_div.to(dh.dtype).unsqueeze(-1) if g_div is not None else torch.zeros_like(dh)
        use_logp = g_logp is not None and (need_h or need_w or need_b)
        if scale is not None:  # the weight gradient of the divergence was finished in forward
            grad_w = None if hint[0] is None else hint[0].mul_(scale)
            grad_b = None if hint[1] is None else hint[1].mul_(scale)
            if use_logp:  # add the log p(y) part: rows with a non-zero g_logp, student logits only
                dW, db = _weight_grads(
                    ctx.plan, n, _active_rows(g_logp != 0), ctx.chunk, s_hidden, t_hidden, weight, t_weight, bias,
                    t_bias, targets, stats, None, g_logp, ctx.temperature, need_w, need_b, grad_h,
                )  # fmt: skip
                grad_w = grad_w.add_(dW) if dW is not None else grad_w
                grad_b = grad_b.add_(db) if db is not None else grad_b
        elif (g_div is not None and (need_w or need_b)) or use_logp:
            active = torch.zeros(n, dtype=torch.bool, device=targets.device)
            if g_div is not None and (need_w or need_b):
                active |= g_div != 0
            if use_logp:
                active |= g_logp != 0
            grad_w, grad_b = _weight_grads(
                ctx.plan, n, _active_rows(active), ctx.chunk, s_hidden, t_hidden, weight, t_weight, bias,
                t_bias, targets, stats, g_div, g_logp if use_logp else None, ctx.temperature, need_w, need_b, grad_h,
            )  # fmt: skip
        if need_w and grad_w is None:  # no gradient reached the outputs
            grad_w = torch.zeros_like(weight)
        if need_b and grad_b is None:
            grad_b = torch.zeros_like(bias)
        return (
            None if grad_h is None else grad_h.to(s_hidden.dtype),
            None,
            None if grad_w is None else grad_w.to(weight.dtype),
            None,
            None if grad_b is None else grad_b.to(bias.dtype),
            *([None] * 8),
        )


class _ChunkedSampledLogps(torch.autograd.Function):
    """(hidden (N, H), weight (V, H), bias (V,) or None, targets (N,)) -> log p(target) (N,)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk, compute_grad, hint):
        n, v = hidden.shape[0], weight.shape[0]
        dt, dev = _compute_dtype(weight.dtype), hidden.device
        want_dh = compute_grad and ctx.needs_input_grad[0]
        hinted = compute_grad and hint is not None and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        logp = torch.empty(n, dtype=dt, device=dev)
        lse = torch.empty(n, 1, dtype=dt, device=dev)
        dh = torch.empty(n, hidden.shape[1], dtype=dt, device=dev) if want_dh else None
        if hinted:
            coefs = torch.empty(n, dtype=dt, device=dev)
            dW = torch.empty(v, hidden.shape[1], dtype=dt, device=dev) if ctx.needs_input_grad[1] else None
            db = torch.zeros(v, dtype=dt, device=dev) if ctx.needs_input_grad[2] else None
        c = max(1, min(chunk, n))
        A = torch.empty(c, v, dtype=dt, device=dev)
        for sel in _row_blocks(n, None, c):
            a = A[: _block_len(sel)]
            _logits_into(a, hidden[sel], weight, bias, temperature)
            tgt = targets[sel].unsqueeze(-1)
            s_y = a.gather(-1, tgt)
            m, z = _exp_shifted(a, a)  # a = p · z
            lse[sel] = m + z.log()
            logp[sel] = (s_y - lse[sel]).squeeze(-1)
            if want_dh or hinted:  # onehot − p
                _add_onehot_(a.div_(-z), tgt.squeeze(-1), torch.ones_like(z))
            if want_dh:
                _grad_to_hidden(a, weight, temperature, out=dh[sel])
            if hinted:
                coefs[sel] = w = _hint_rows(hint, sel, logp[sel], dt, dev)
                _accumulate_head_grads(dW, db, a, hidden[sel], w.unsqueeze(-1), temperature, first=sel.start == 0)
        del A
        if compute_grad:
            ctx.save_for_backward(hidden, weight, bias, targets, dh, lse)
            ctx.temperature, ctx.chunk = temperature, chunk
            ctx.hint = (dW, db, coefs) if hinted and n > 0 else None
        ctx.set_materialize_grads(False)
        return logp

    @staticmethod
    def backward(ctx, g):
        hidden, weight, bias, targets, dh, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        g = _nonzero_or_none(g)
        hint = _take_hint(ctx)
        scale = _proportional(g, hint[2]) if hint is not None and g is not None else None
        grad_h = grad_w = grad_b = None
        if need_h:
            grad_h = dh * g.to(dh.dtype).unsqueeze(-1) if g is not None else torch.zeros_like(dh)
        if scale is not None:
            grad_w = None if hint[0] is None else hint[0].mul_(scale)
            grad_b = None if hint[1] is None else hint[1].mul_(scale)
        elif (need_w or need_b) and g is not None:
            grad_w, grad_b = _weight_grads(
                None, targets.shape[0], _active_rows(g != 0), ctx.chunk, hidden, None, weight, None, bias, None,
                targets, (lse,), None, g, ctx.temperature, need_w, need_b, None,
            )  # fmt: skip
        if need_w and grad_w is None:
            grad_w = torch.zeros_like(weight)
        if need_b and grad_b is None:
            grad_b = torch.zeros_like(bias)
        return (
            None if grad_h is None else grad_h.to(hidden.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            *([None] * 5),
        )


# ----------------------------------------------------------------------------- public API (the plain path's signatures)


def _flatten(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, H), (V, H), (…) -> (N, H), (N,) with checks that name the argument."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be the (V, H) LM-head matrix, got shape {tuple(weight.shape)}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{name} has shape {tuple(hidden.shape)}; its last dimension must be the hidden size {weight.shape[1]} of weight"
        )
    if tuple(hidden.shape[:-1]) != tuple(targets.shape):
        raise ValueError(
            f"targets has shape {tuple(targets.shape)}; it must match {name}'s leading dimensions {tuple(hidden.shape[:-1])}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer token ids, got dtype {targets.dtype}")
    return hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1).long()


def _check_common(weight: torch.Tensor, bias: torch.Tensor | None, temperature: float, chunk_size: int | None) -> int:
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},) like the LM head's vocabulary, got {tuple(bias.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size is None:
        return default_chunk_size(weight.shape[0])
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    return int(chunk_size)


def _check_hint(loss_weights, targets: torch.Tensor):
    """A callable passes through; a tensor must be shaped like targets and is flattened."""
    if loss_weights is None or callable(loss_weights):
        return loss_weights
    if not isinstance(loss_weights, torch.Tensor) or tuple(loss_weights.shape) != tuple(targets.shape):
        shape = tuple(loss_weights.shape) if isinstance(loss_weights, torch.Tensor) else type(loss_weights).__name__
        raise ValueError(f"loss_weights must be a tensor shaped like targets {tuple(targets.shape)} or a callable, got {shape}")
    return loss_weights.detach().reshape(-1)


def sampled_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    loss_weights: torch.Tensor | Callable[[slice, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """log π(target) per position, chunk by chunk. hidden (N, H), weight (V, H), targets (N,) -> (N,)

    Same inputs and result as `sgpo.objectives.lm_head.sampled_logps` (leading dimensions are kept);
    `chunk_size` positions' logits are held at a time (default: `default_chunk_size(V)`).

    `loss_weights` (optional, a speed hint that never changes a result): the per-position weights
    w, up to one common factor, with which the caller's loss will depend on the log-probs, i.e. the
    gradient that will reach them (for a clipped surrogate −A·ρ·[unclipped] / count). A tensor
    shaped like `targets`, or a callable `(rows: slice, logp: (c,)) -> (c,)` called chunk by chunk
    in the forward pass with that chunk's (detached) log-probs, for weights that depend on them. The
    weight gradient is then finished in the forward pass instead of recomputing the logits in
    backward; if the gradient that arrives is not proportional to w, backward recomputes exactly.
    """
    chunk = _check_common(weight, bias, temperature, chunk_size)
    h, tg = _flatten(hidden, weight, targets, "hidden")
    hint = _check_hint(loss_weights, targets)
    compute_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (hidden, weight, bias))
    out = _ChunkedSampledLogps.apply(h, weight, bias, tg, float(temperature), chunk, compute_grad, hint)
    return out.view(targets.shape)


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
    chunk_size: int | None = None,
    loss_weights: torch.Tensor | Callable[[slice, DistillTerms], torch.Tensor] | None = None,
) -> DistillTerms:
    """Divergence and sampled-token log-probs at N positions, chunk by chunk.

    Same inputs and result as `sgpo.objectives.lm_head.distill_terms`: student_hidden (N, H) with
    grad; teacher_hidden (N, H) no grad; weight (V, H) the student's LM head (`teacher_weight` the
    rollout-time snapshot, if the policy moved since, and `teacher_bias` likewise); targets (N,). `divergence` and `student_logp`
    are differentiable w.r.t. student_hidden, weight and bias; `teacher_logp` is not.

    `loss_weights` (optional, a speed hint that never changes a result): the per-position weights
    w, up to one common factor, with which the caller will sum `divergence` into its loss — a
    tensor shaped like `targets`, or a callable `(rows: slice, terms: DistillTerms) -> (c,)` called
    chunk by chunk in the forward pass with that chunk's (detached) divergence and log-probs, for
    weights that depend on them (the proximal mask, a KL cap). The LM head's gradient is then
    finished in the forward pass (4 instead of 6 N·H·V matmuls; one more (V, H) float32 buffer
    lives from forward to backward). If the gradient that reaches `divergence` is not proportional
    to w (to rounding), backward recomputes exactly as without the hint.
    """
    plan = _check_kind(kind, topk)
    chunk = _check_common(weight, bias, temperature, chunk_size)
    if plan == "forward_kl_topk" and weight.shape[0] < 2:
        raise ValueError("distill_topk needs a vocabulary of at least 2 tokens (top-k plus a tail)")
    h_s, tg = _flatten(student_hidden, weight, targets, "student_hidden")
    if teacher_hidden.shape != student_hidden.shape:
        raise ValueError(
            f"teacher_hidden has shape {tuple(teacher_hidden.shape)}; it must match student_hidden {tuple(student_hidden.shape)}"
        )
    t_w = (weight if teacher_weight is None else teacher_weight).detach()
    if t_w.shape != weight.shape:
        raise ValueError(f"teacher_weight has shape {tuple(t_w.shape)}; it must match weight {tuple(weight.shape)}")
    h_t = teacher_hidden.detach().reshape(h_s.shape)
    t_b = bias if teacher_bias is None else teacher_bias
    t_b = None if t_b is None else t_b.detach()
    if t_b is not None and t_b.shape != (t_w.shape[0],):
        raise ValueError(f"teacher_bias has shape {tuple(t_b.shape)}; it must be ({t_w.shape[0]},)")
    hint = _check_hint(loss_weights, targets)
    compute_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (student_hidden, weight, bias))
    div, s_logp, t_logp = _ChunkedDistill.apply(
        h_s, h_t, weight, t_w, bias, t_b, tg, plan, int(topk or 0), float(temperature), chunk, compute_grad, hint
    )
    shape = targets.shape
    return DistillTerms(div.view(shape), s_logp.view(shape), t_logp.view(shape))
