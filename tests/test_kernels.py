"""The chunked LM-head kernels (`sgpo.objectives.chunked_head`) against the plain path (`sgpo.objectives.lm_head`).

The plain path (logits materialised, autograd / the explicit-gradient divergences) is the reference;
a few cases are also derived by hand and by finite differences (gradcheck), so the reference is not
the only witness. "Relative" below means max |actual − expected| ≤ tol · max |expected| per tensor.
"""

from __future__ import annotations

import math

import pytest
import torch

from sgpo.objectives import chunked_head as kernels
from sgpo.objectives import lm_head

KINDS = [("forward_kl", None), ("forward_kl", 5), ("reverse_kl", None)]
KIND_IDS = ["forward_kl", "forward_kl_top5", "reverse_kl"]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str = "") -> None:
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:g} × {scale:.3e}"


def make_case(n, h, v, dtype, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n, h, generator=g, dtype=dtype)
    teacher = torch.randn(n, h, generator=g, dtype=dtype)
    weight = torch.randn(v, h, generator=g, dtype=dtype) * 0.7
    teacher_weight = weight + 0.3 * torch.randn(v, h, generator=g, dtype=dtype)  # the rollout-time snapshot
    b = torch.randn(v, generator=g, dtype=dtype) if bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    return student, teacher, weight, teacher_weight, b, targets


def run_distill(fn, student, teacher, weight, targets, g_div, g_logp, **kw):
    """Outputs and the gradients of Σ g_div·div + Σ g_logp·student_logp w.r.t. (hidden, weight, bias)."""
    s = student.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    b = kw.pop("bias", None)
    b = None if b is None else b.clone().requires_grad_()
    out = fn(s, teacher, w, targets, bias=b, **kw)
    loss = 0.0
    if g_div is not None:
        loss = loss + (out.divergence * g_div).sum()
    if g_logp is not None:
        loss = loss + (out.student_logp * g_logp).sum()
    loss.backward()
    return out, s.grad, w.grad, (None if b is None else b.grad)


# ----------------------------------------------------------------------------- hand-derived


# W = I (V = H), so the logits are the hidden states themselves. Student hidden (0, 0, 0): p uniform.
# Teacher hidden (ln 6, ln 3, 0): q = (6, 3, 1) / 10.
#   forward KL(q‖p) = Σ q ln(3q) = 0.6 ln 1.8 + 0.3 ln 0.9 + 0.1 ln 0.3
#                   = 0.352672 − 0.031608 − 0.120397 = 0.200667;   ∂/∂z = p − q = (−0.266667, 0.033333, 0.233333)
#   reverse KL(p‖q) = Σ (1/3) ln((1/3)/q) = (1/3)(ln(10/18) + ln(10/9) + ln(10/3))
#                   = (1/3)(−0.587787 + 0.105361 + 1.203973) = 0.240516
#     ∂/∂z_j = p_j (ln p_j − ln q_j − KL) = (1/3)(−0.587787 − 0.240516, 0.105361 − 0.240516, 1.203973 − 0.240516)
#            = (−0.276101, −0.045052, 0.321153)
#   top-1 + tail: buckets {0}, {1, 2}: q = (0.6, 0.4), p = (1/3, 2/3);
#     KL = 0.6 ln 1.8 + 0.4 ln 0.6 = 0.352672 − 0.204330 = 0.148342
#     ∂/∂z_0 = p_0 − q_0 = −0.266667;  ∂/∂z_j = p_j (1 − q_tail / p_tail) = (1/3)(1 − 0.6) = 0.133333 for j = 1, 2
# With W = I the hidden gradient is ∂/∂z itself, and the weight gradient ∂W = (∂/∂z)ᵀ h = 0 (h = 0).
HAND = {
    ("forward_kl", None): (0.200667, [-0.266667, 0.033333, 0.233333]),
    ("reverse_kl", None): (0.240516, [-0.276101, -0.045052, 0.321153]),
    ("forward_kl", 1): (0.148342, [-0.266667, 0.133333, 0.133333]),
}


@pytest.mark.parametrize("kind,topk", list(HAND))
def test_hand_derived_divergence_and_gradient(kind, topk):
    student = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[math.log(6), math.log(3), 0.0]], dtype=torch.float64)
    weight = torch.eye(3, dtype=torch.float64, requires_grad=True)
    out = kernels.distill_terms(student, teacher, weight, torch.tensor([0]), kind=kind, topk=topk)
    out.divergence.sum().backward()
    value, grad = HAND[(kind, topk)]
    assert out.divergence.item() == pytest.approx(value, abs=1e-6)
    assert student.grad[0].tolist() == pytest.approx(grad, abs=1e-6)
    assert torch.equal(weight.grad, torch.zeros(3, 3, dtype=torch.float64))
    # log p(0) = ln(1/3), log q(0) = ln 0.6
    assert out.student_logp.item() == pytest.approx(math.log(1 / 3), abs=1e-12)
    assert out.teacher_logp.item() == pytest.approx(math.log(0.6), abs=1e-12)


def test_hand_derived_temperature():
    # Teacher hidden (ln 36, ln 9, 0) at T = 2 gives logits (ln 6, ln 3, 0): the same q as above, so
    # the same KL 0.200667, and the hidden gradient is (p − q) W / T = (−0.133333, 0.016667, 0.116667).
    student = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[math.log(36), math.log(9), 0.0]], dtype=torch.float64)
    out = kernels.distill_terms(student, teacher, torch.eye(3, dtype=torch.float64), torch.tensor([1]), temperature=2.0)
    out.divergence.sum().backward()
    assert out.divergence.item() == pytest.approx(0.200667, abs=1e-6)
    assert student.grad[0].tolist() == pytest.approx([-0.133333, 0.016667, 0.116667], abs=1e-6)


# ----------------------------------------------------------------------------- against the plain path


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("grads", ["div", "logp", "both"])
@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
def test_matches_plain_path(kind, topk, grads, dtype):
    # N = 13 positions in chunks of 4 (the last chunk has 1), temperature ≠ 1, a bias, a teacher head
    # that differs from the student's, masked positions (zero incoming gradient), and per-position
    # gradients that differ, as the trainer's instance weights and proximal mask make them.
    n, h, v = 13, 8, 37
    student, teacher, weight, teacher_weight, bias, targets = make_case(n, h, v, dtype)
    gen = torch.Generator().manual_seed(1)
    g_div = torch.rand(n, generator=gen, dtype=dtype) + 0.5 if grads in ("div", "both") else None
    g_logp = torch.randn(n, generator=gen, dtype=dtype) if grads in ("logp", "both") else None
    if g_div is not None:
        g_div[[2, 7, 12]] = 0.0  # masked
    if g_logp is not None:
        g_logp[[3, 7]] = 0.0
    kw = dict(teacher_weight=teacher_weight, kind=kind, topk=topk, temperature=0.7, bias=bias)
    ref = run_distill(lm_head.distill_terms, student, teacher, weight, targets, g_div, g_logp, **kw)
    got = run_distill(kernels.distill_terms, student, teacher, weight, targets, g_div, g_logp, chunk_size=4, **kw)
    for name, a, e in zip(
        ("divergence", "student_logp", "teacher_logp"),
        (got[0].divergence, got[0].student_logp, got[0].teacher_logp),
        (ref[0].divergence, ref[0].student_logp, ref[0].teacher_logp),
    ):
        assert_rel(a, e, TOL[dtype], name)
    for name, a, e in zip(("d hidden", "d weight", "d bias"), got[1:], ref[1:]):
        assert_rel(a, e, TOL[dtype], name)
    assert not got[0].teacher_logp.requires_grad


@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
def test_single_position_default_chunk(kind, topk):
    student, teacher, weight, teacher_weight, bias, targets = make_case(1, 8, 50, torch.float32, seed=3, bias=False)
    g = torch.tensor([0.25])
    ref = run_distill(lm_head.distill_terms, student, teacher, weight, targets, g, None, kind=kind, topk=topk)
    got = run_distill(kernels.distill_terms, student, teacher, weight, targets, g, None, kind=kind, topk=topk)
    assert_rel(got[0].divergence, ref[0].divergence, 1e-5, "divergence")
    assert_rel(got[1], ref[1], 1e-5, "d hidden")
    assert_rel(got[2], ref[2], 1e-5, "d weight")


@pytest.mark.parametrize("k", [17, 18, 19, 30])
def test_topk_near_and_beyond_vocab(k):
    # V = 19: k = 18 = V − 1 leaves a one-token tail; k ≥ V is clamped to V − 1, as in the plain path
    n, v = 7, 19
    student, teacher, weight, teacher_weight, bias, targets = make_case(n, 6, v, torch.float64, seed=4)
    g = torch.linspace(0.5, 1.5, n, dtype=torch.float64)
    kw = dict(teacher_weight=teacher_weight, topk=k, temperature=1.3, bias=bias)
    ref = run_distill(lm_head.distill_terms, student, teacher, weight, targets, g, g, **kw)
    got = run_distill(kernels.distill_terms, student, teacher, weight, targets, g, g, chunk_size=3, **kw)
    assert_rel(got[0].divergence, ref[0].divergence, 1e-10, "divergence")
    for name, a, e in zip(("d hidden", "d weight", "d bias"), got[1:], ref[1:]):
        assert_rel(a, e, 1e-10, name)


def test_leading_dimensions_are_kept():
    # (B, T, H) hidden states and (B, T) targets, as a trainer slices completions
    student, teacher, weight, teacher_weight, bias, targets = make_case(10, 8, 23, torch.float64, seed=5)
    s, t, y = student.view(2, 5, 8), teacher.view(2, 5, 8), targets.view(2, 5)
    got = kernels.distill_terms(s, t, weight, y, chunk_size=3)
    ref = lm_head.distill_terms(s, t, weight, y)
    assert got.divergence.shape == (2, 5)
    assert_rel(got.divergence, ref.divergence, 1e-10)
    assert_rel(kernels.sampled_logps(s, weight, y, chunk_size=4), lm_head.sampled_logps(s, weight, y), 1e-10)


@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
def test_all_positions_masked_gives_zero_gradient(kind, topk):
    student, teacher, weight, teacher_weight, bias, targets = make_case(6, 8, 29, torch.float32, seed=6)
    got = run_distill(
        kernels.distill_terms,
        student,
        teacher,
        weight,
        targets,
        torch.zeros(6),
        None,
        kind=kind,
        topk=topk,
        bias=bias,
        chunk_size=4,
    )
    for grad in got[1:]:
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
def test_frozen_head_needs_no_recompute_and_matches(kind, topk):
    # weight.requires_grad = False (LoRA, frozen head): only the hidden gradient, computed in forward
    student, teacher, weight, teacher_weight, bias, targets = make_case(9, 8, 31, torch.float32, seed=7, bias=False)
    g = torch.rand(9, generator=torch.Generator().manual_seed(2)) + 0.1
    grads = []
    for fn, kw in ((lm_head.distill_terms, {}), (kernels.distill_terms, {"chunk_size": 4})):
        s = student.clone().requires_grad_()
        (fn(s, teacher, weight, targets, kind=kind, topk=topk, **kw).divergence * g).sum().backward()
        grads.append(s.grad)
    assert_rel(grads[1], grads[0], 1e-5, "d hidden")


def test_no_grad_mode_gives_the_same_values_and_no_graph():
    student, teacher, weight, teacher_weight, bias, targets = make_case(11, 8, 31, torch.float32, seed=8)
    s, w = student.requires_grad_(), weight.requires_grad_()
    with torch.no_grad():
        got = kernels.distill_terms(s, teacher, w, targets, bias=bias, chunk_size=5)
        ref = lm_head.distill_terms(s, teacher, w, targets, bias=bias)
        lp = kernels.sampled_logps(s, w, targets, bias=bias, chunk_size=5)
    assert got.divergence.grad_fn is None and lp.grad_fn is None
    assert_rel(got.divergence, ref.divergence, 1e-5)
    assert_rel(lp, ref.student_logp, 1e-5)


# ----------------------------------------------------------------------------- exactness properties


@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("teacher_weight_given", [False, True], ids=["same_head", "equal_copy"])
def test_exactly_zero_where_teacher_equals_student(kind, topk, teacher_weight_given):
    # where the strategy changes nothing (same hidden states, same head), the divergence and its
    # gradients are exactly 0, not 1e-8: the signal the method relies on is exact
    student, _, weight, _, bias, targets = make_case(10, 8, 41, torch.float32, seed=9)
    teacher = student.clone()
    kw = dict(kind=kind, topk=topk, temperature=0.8, bias=bias, chunk_size=4)
    if teacher_weight_given:
        kw["teacher_weight"] = weight.clone()
    out, gh, gw, gb = run_distill(kernels.distill_terms, student, teacher, weight, targets, torch.rand(10) + 0.5, None, **kw)
    assert torch.equal(out.divergence, torch.zeros(10))
    assert torch.equal(gh, torch.zeros_like(gh))
    assert torch.equal(gw, torch.zeros_like(gw))
    assert torch.equal(gb, torch.zeros_like(gb))
    assert torch.equal(out.student_logp, out.teacher_logp)


@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
def test_gradcheck_finite_differences(kind, topk):
    # an independent witness: finite differences through several chunks, both differentiable outputs.
    # The bias is held fixed: the teacher uses the same bias, detached, so perturbing it would move
    # the teacher too (its gradient is checked against the plain path above).
    student, teacher, weight, teacher_weight, bias, targets = make_case(5, 3, 7, torch.float64, seed=10)
    s, w = student.clone().requires_grad_(), weight.clone().requires_grad_()

    def f(s, w):
        out = kernels.distill_terms(
            s, teacher, w, targets, teacher_weight=teacher_weight, kind=kind, topk=topk, temperature=0.9, bias=bias, chunk_size=2
        )
        return out.divergence, out.student_logp

    assert torch.autograd.gradcheck(f, (s, w), eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------- sampled_logps


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampled_logps_matches_plain_path(dtype, temperature):
    n, h, v = 11, 8, 43
    student, _, weight, _, bias, targets = make_case(n, h, v, dtype, seed=11)
    g = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=dtype)
    g[4] = 0.0  # a masked token
    res = []
    for fn, kw in ((lm_head.sampled_logps, {}), (kernels.sampled_logps, {"chunk_size": 4})):
        hs, w, b = (x.clone().requires_grad_() for x in (student, weight, bias))
        out = fn(hs, w, targets, temperature, b, **kw)
        (out * g).sum().backward()
        res.append((out, hs.grad, w.grad, b.grad))
    for name, a, e in zip(("logp", "d hidden", "d weight", "d bias"), res[1], res[0]):
        assert_rel(a, e, TOL[dtype], name)


def test_sampled_logps_hand_derived():
    # W = I, hidden (ln 3, 0) -> p = (3/4, 1/4); log p(1) = ln(1/4); ∂/∂z = onehot(1) − p = (−3/4, 3/4)
    hs = torch.tensor([[math.log(3), 0.0]], dtype=torch.float64, requires_grad=True)
    out = kernels.sampled_logps(hs, torch.eye(2, dtype=torch.float64), torch.tensor([1]))
    out.sum().backward()
    assert out.item() == pytest.approx(math.log(0.25), abs=1e-12)
    assert hs.grad[0].tolist() == pytest.approx([-0.75, 0.75], abs=1e-12)


# ----------------------------------------------------------------------------- tied embeddings, real model


def test_tied_embeddings_through_a_real_qwen2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    model = transformers.Qwen2ForCausalLM(config).float()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    gen = torch.Generator().manual_seed(0)
    completion = torch.randint(0, 40, (2, 9), generator=gen)  # ids 40..60 never appear in the inputs
    student_ids = torch.cat([torch.randint(0, 40, (2, 4), generator=gen), completion], dim=1)
    teacher_ids = torch.cat([torch.randint(0, 40, (2, 7), generator=gen), completion], dim=1)  # a longer (guided) prompt
    with torch.no_grad():
        teacher_hidden = model.model(teacher_ids).last_hidden_state[:, 7:-1]  # positions predicting completion[1:]
    targets = completion[:, 1:]
    g_div = torch.rand(2, 8, generator=gen) + 0.5
    grads = []
    for fn, kw in ((lm_head.distill_terms, {}), (kernels.distill_terms, {"chunk_size": 5})):
        model.zero_grad(set_to_none=True)
        student_hidden = model.model(student_ids).last_hidden_state[:, 4:-1]
        out = fn(student_hidden, teacher_hidden, model.lm_head.weight, targets, temperature=0.9, **kw)
        (out.divergence * g_div).sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert set(grads[0]) == set(grads[1])
    for name in grads[0]:
        assert_rel(grads[1][name], grads[0][name], 1e-5, name)
    # rows of tokens that never appear in the inputs get gradient only through the LM head: the
    # head's weight gradient reached the shared embedding matrix
    emb = grads[1]["model.embed_tokens.weight"]
    assert emb[40:].abs().sum() > 0


# ----------------------------------------------------------------------------- half precision, errors


def test_bfloat16_inputs_follow_the_plain_path():
    # half-precision hidden states and head: logits come from a bf16 matmul in both paths and are
    # upcast to float32; outputs are float32, gradients come back in bf16. The two paths round the
    # bf16 matmuls differently (chunking, float32 weight-gradient accumulation here), so they agree
    # to bf16 precision: 2^-8 ≈ 4e-3 relative per rounding, a few roundings deep -> 2e-2.
    student, teacher, weight, teacher_weight, bias, targets = make_case(12, 16, 53, torch.float32, seed=12, bias=False)
    s16, t16, w16 = student.bfloat16(), teacher.bfloat16(), weight.bfloat16()
    g = torch.rand(12) + 0.5
    ref = run_distill(lm_head.distill_terms, s16, t16, w16, targets, g, None)
    got = run_distill(kernels.distill_terms, s16, t16, w16, targets, g, None, chunk_size=5)
    assert got[0].divergence.dtype == torch.float32 and got[1].dtype == torch.bfloat16 and got[2].dtype == torch.bfloat16
    assert_rel(got[0].divergence, ref[0].divergence, 2e-2, "divergence")
    assert_rel(got[1].float(), ref[1].float(), 2e-2, "d hidden")
    assert_rel(got[2].float(), ref[2].float(), 2e-2, "d weight")


def test_errors_name_the_problem():
    student, teacher, weight, teacher_weight, bias, targets = make_case(4, 8, 11, torch.float32)
    with pytest.raises(ValueError, match="unknown distill_divergence 'js'"):
        kernels.distill_terms(student, teacher, weight, targets, kind="js")
    with pytest.raises(ValueError, match="only defined for forward_kl"):
        kernels.distill_terms(student, teacher, weight, targets, kind="reverse_kl", topk=3)
    with pytest.raises(ValueError, match="teacher_hidden has shape"):
        kernels.distill_terms(student, teacher[:3], weight, targets)
    with pytest.raises(ValueError, match="teacher_weight has shape"):
        kernels.distill_terms(student, teacher, weight, targets, teacher_weight=weight[:5])
    with pytest.raises(ValueError, match="targets has shape"):
        kernels.sampled_logps(student, weight, targets[:3])
    with pytest.raises(ValueError, match="hidden size 8"):
        kernels.sampled_logps(student[:, :5], weight, targets)
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        kernels.sampled_logps(student, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kernels.distill_terms(student, teacher, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match=r"bias must have shape \(11,\)"):
        kernels.sampled_logps(student, weight, targets, bias=bias[:4])
    with pytest.raises(ValueError, match="integer token ids"):
        kernels.sampled_logps(student, weight, targets.float())


def test_default_chunk_size_bounds_the_buffer():
    # 128 MiB / (4 bytes × 151,936) = 220.8 -> 220 rows; tiny vocabularies get big chunks, never 0
    assert kernels.default_chunk_size(151_936) == 220
    assert kernels.default_chunk_size(32_000) == 1048
    assert kernels.default_chunk_size(10**12) == 1


# ----------------------------------------------------------------------------- the loss_weights hint


@pytest.fixture
def no_recompute(monkeypatch):
    """Makes backward's recomputation of the logits an error: the hint must have made it unnecessary."""
    from sgpo.objectives import chunked_head

    def fail(*args, **kwargs):
        raise AssertionError("backward recomputed the logits")

    monkeypatch.setattr(chunked_head, "_weight_grads", fail)


def hinted_distill(loss_weights):
    def fn(*args, **kwargs):
        return kernels.distill_terms(*args, chunk_size=4, loss_weights=loss_weights, **kwargs)

    return fn


@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
def test_hint_tensor_finishes_the_weight_gradient_in_forward(kind, topk, no_recompute):
    student, teacher, weight, teacher_weight, bias, targets = make_case(13, 8, 37, torch.float32, seed=13)
    w = torch.rand(13, generator=torch.Generator().manual_seed(4)) + 0.2
    w[[1, 6]] = 0.0
    g = 0.37 * w  # the loss is 0.37 · Σ w · div: proportional to the hint
    kw = dict(teacher_weight=teacher_weight, kind=kind, topk=topk, temperature=0.8, bias=bias)
    ref = run_distill(lm_head.distill_terms, student, teacher, weight, targets, g, None, **kw)
    got = run_distill(hinted_distill(w), student, teacher, weight, targets, g, None, **kw)
    assert_rel(got[0].divergence, ref[0].divergence, 1e-5, "divergence")
    for name, a, e in zip(("d hidden", "d weight", "d bias"), got[1:], ref[1:]):
        assert_rel(a, e, 1e-5, name)


def test_hint_callable_with_masks_from_this_forward_pass(no_recompute):
    # the trainer's case: the weight of a position depends on log p(y) (the proximal mask) and on
    # the divergence (a KL cap) of this very forward pass, so it is a callable evaluated per chunk
    student, teacher, weight, teacher_weight, bias, targets = make_case(13, 8, 37, torch.float64, seed=14, bias=False)
    coef = torch.rand(13, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.5
    threshold = -3.6  # keeps some positions and masks others (checked below)
    cap = (
        lm_head.distill_terms(student, teacher, weight, targets, teacher_weight=teacher_weight, temperature=0.9)
        .divergence.median()
        .item()
    )
    calls = []

    def loss_weights(rows, terms):
        calls.append(rows)
        return coef[rows] * (terms.student_logp > threshold) * (terms.divergence < cap)

    s = student.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    out = hinted_distill(loss_weights)(s, teacher, w, targets, teacher_weight=teacher_weight, temperature=0.9)
    mask = (out.student_logp.detach() > threshold) & (out.divergence.detach() < cap)
    assert 0 < int((out.student_logp.detach() <= threshold).sum()) and 0 < int(mask.sum()) < 13
    (out.divergence * coef * mask).sum().backward()
    assert calls == [slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 13)]
    ref = run_distill(
        lm_head.distill_terms,
        student,
        teacher,
        weight,
        targets,
        coef * mask,
        None,
        teacher_weight=teacher_weight,
        temperature=0.9,
    )
    assert_rel(s.grad, ref[1], 1e-10, "d hidden")
    assert_rel(w.grad, ref[2], 1e-10, "d weight")


@pytest.mark.parametrize("kind,topk", KINDS, ids=KIND_IDS)
def test_a_wrong_hint_falls_back_to_the_exact_gradient(kind, topk):
    student, teacher, weight, teacher_weight, bias, targets = make_case(13, 8, 37, torch.float64, seed=15)
    gen = torch.Generator().manual_seed(6)
    hint = torch.rand(13, generator=gen, dtype=torch.float64) + 0.5
    g = torch.rand(13, generator=gen, dtype=torch.float64) + 0.5  # not proportional to the hint
    kw = dict(teacher_weight=teacher_weight, kind=kind, topk=topk, bias=bias)
    ref = run_distill(lm_head.distill_terms, student, teacher, weight, targets, g, None, **kw)
    got = run_distill(hinted_distill(hint), student, teacher, weight, targets, g, None, **kw)
    for name, a, e in zip(("d hidden", "d weight", "d bias"), got[1:], ref[1:]):
        assert_rel(a, e, 1e-10, name)


def test_hint_with_student_logp_gradient_and_a_second_backward():
    # both outputs carry gradient (the log p(y) part is recomputed, the divergence part is not), and
    # a second backward through the same graph (retain_graph) gives the same gradients again
    student, teacher, weight, teacher_weight, bias, targets = make_case(9, 8, 31, torch.float64, seed=16)
    gen = torch.Generator().manual_seed(7)
    w, g_logp = torch.rand(9, generator=gen, dtype=torch.float64) + 0.5, torch.randn(9, generator=gen, dtype=torch.float64)
    g_logp[2] = 0.0
    ref = run_distill(
        lm_head.distill_terms, student, teacher, weight, targets, 2 * w, g_logp, teacher_weight=teacher_weight, bias=bias
    )
    s, wt, b = (x.clone().requires_grad_() for x in (student, weight, bias))
    out = kernels.distill_terms(s, teacher, wt, targets, teacher_weight=teacher_weight, bias=b, chunk_size=4, loss_weights=w)
    loss = (out.divergence * 2 * w).sum() + (out.student_logp * g_logp).sum()
    for _ in range(2):
        s.grad = wt.grad = b.grad = None
        loss.backward(retain_graph=True)
        for name, a, e in zip(("d hidden", "d weight", "d bias"), (s.grad, wt.grad, b.grad), ref[1:]):
            assert_rel(a, e, 1e-10, name)


def test_hint_keeps_exact_zero():
    student, _, weight, _, bias, targets = make_case(10, 8, 41, torch.float32, seed=17)
    w = torch.rand(10) + 0.5
    out, gh, gw, gb = run_distill(hinted_distill(w), student, student.clone(), weight, targets, w, None, bias=bias)
    assert torch.equal(out.divergence, torch.zeros(10))
    assert (
        torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gh, torch.zeros_like(gh)) and torch.equal(gb, torch.zeros_like(gb))
    )


def test_sampled_logps_hint_from_a_clipped_surrogate(no_recompute):
    # RL term: L = −Σ min(ρA, clip(ρ, 0.8, 1.2) A) / N with ρ = exp(logp − old); its gradient w.r.t.
    # logp is −A ρ / N where the unclipped branch is taken (A > 0: ρ ≤ 1.2; A < 0: ρ ≥ 0.8), else 0
    n = 11
    student, _, weight, _, bias, targets = make_case(n, 8, 43, torch.float64, seed=18)
    gen = torch.Generator().manual_seed(8)
    adv = torch.randn(n, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        old = lm_head.sampled_logps(student, weight, targets, 0.9, bias) + 0.3 * torch.randn(
            n, generator=gen, dtype=torch.float64
        )

    def surrogate(logp):
        ratio = (logp - old).exp()
        return -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).sum() / n

    def loss_weights(rows, logp):
        ratio = (logp - old[rows]).exp()
        unclipped = torch.where(adv[rows] > 0, ratio <= 1.2, ratio >= 0.8)
        return -adv[rows] * ratio * unclipped / n

    res = []
    for fn, kw in ((lm_head.sampled_logps, {}), (kernels.sampled_logps, {"chunk_size": 4, "loss_weights": loss_weights})):
        hs, w, b = (x.clone().requires_grad_() for x in (student, weight, bias))
        surrogate(fn(hs, w, targets, 0.9, b, **kw)).backward()
        res.append((hs.grad, w.grad, b.grad))
    for name, a, e in zip(("d hidden", "d weight", "d bias"), res[1], res[0]):
        assert_rel(a, e, 1e-10, name)


def test_hint_errors():
    student, teacher, weight, _, _, targets = make_case(6, 8, 11, torch.float32)
    with pytest.raises(ValueError, match=r"loss_weights must be a tensor shaped like targets \(6,\)"):
        kernels.distill_terms(student, teacher, weight, targets, loss_weights=torch.ones(5))
    w = weight.clone().requires_grad_()
    with pytest.raises(ValueError, match="loss_weights gave 1 weights for positions 0:4; expected 4"):
        kernels.sampled_logps(student, w, targets, chunk_size=4, loss_weights=lambda rows, logp: torch.ones(1))


def test_the_documented_trainer_recipe_needs_no_recompute(no_recompute):
    # docs/performance.md: instance weight × proximal keep-mask × KL-cap mask as the hint, and the
    # loss built from the returned terms with the objectives' own proximal_keep_mask / cap_per_token
    from sgpo.objectives import cap_per_token, proximal_keep_mask

    n = 13
    student, teacher, weight, teacher_weight, bias, targets = make_case(n, 8, 37, torch.float64, seed=19, bias=False)
    gen = torch.Generator().manual_seed(9)
    instance_weight = torch.rand(n, generator=gen, dtype=torch.float64)
    instance_weight[:3] = 0.0  # a problem whose guided rollouts did no better
    with torch.no_grad():
        plain = lm_head.distill_terms(student, teacher, weight, targets, teacher_weight=teacher_weight, temperature=0.9)
    old_logp = plain.student_logp + 0.4 * torch.randn(n, generator=gen, dtype=torch.float64)  # the policy moved
    kl_cap = plain.divergence.median().item()
    eps_low, eps_high, coef, n_tokens = 0.2, 0.28, 0.5, 40

    def loss_weights(rows, terms):
        w = instance_weight[rows] * proximal_keep_mask(terms.student_logp, old_logp[rows], terms.teacher_logp, eps_low, eps_high)
        return w * (terms.divergence <= kl_cap)

    grads = []
    for fn, kw in ((lm_head.distill_terms, {}), (kernels.distill_terms, {"loss_weights": loss_weights, "chunk_size": 4})):
        s, w = student.clone().requires_grad_(), weight.clone().requires_grad_()
        terms = fn(s, teacher, w, targets, teacher_weight=teacher_weight, temperature=0.9, **kw)
        keep = proximal_keep_mask(terms.student_logp, old_logp, terms.teacher_logp, eps_low, eps_high)
        assert 0 < int(keep.sum()) < n  # the mask drops some tokens and keeps others
        loss = coef * (cap_per_token(terms.divergence, kl_cap) * instance_weight * keep).sum() / n_tokens
        loss.backward()
        grads.append((s.grad, w.grad))
    assert_rel(grads[1][0], grads[0][0], 1e-10, "d hidden")
    assert_rel(grads[1][1], grads[0][1], 1e-10, "d weight")
