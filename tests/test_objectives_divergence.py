import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo.objectives import (
    distill_terms,
    forward_kl,
    forward_kl_reference,
    forward_kl_topk_reference,
    reverse_kl,
    reverse_kl_reference,
    token_divergence,
)


def test_forward_kl_equals_torch_kl_div():
    torch.manual_seed(0)
    s, t = torch.randn(6, 50), torch.randn(6, 50)
    expected = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(forward_kl_reference(s, t), expected)
    torch.testing.assert_close(forward_kl(s, t), expected)


def test_reverse_kl_equals_torch_kl_div_swapped():
    torch.manual_seed(1)
    s, t = torch.randn(6, 50), torch.randn(6, 50)
    expected = F.kl_div(F.log_softmax(t, -1), F.log_softmax(s, -1), log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(reverse_kl_reference(s, t), expected)
    torch.testing.assert_close(reverse_kl(s, t), expected)


def test_topk_tail_bucket_hand_value():
    # q = [.5, .3, .15, .05], p uniform, k = 2: buckets {0}, {1}, tail {2, 3}
    # KL = .5 ln(.5/.25) + .3 ln(.3/.25) + .2 ln(.2/.5) = .346574 + .054697 − .183258 = .218013
    q = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = torch.zeros(1, 4)
    expected = 0.5 * math.log(2) + 0.3 * math.log(1.2) + 0.2 * math.log(0.4)
    assert forward_kl_topk_reference(p, q, 2).item() == pytest.approx(expected, abs=1e-6)
    assert forward_kl(p, q, topk=2).item() == pytest.approx(expected, abs=1e-6)


def test_topk_with_k_covering_all_but_one_equals_full_kl():
    # with k = V − 1 the tail bucket is a single token: the bucketed KL is the full KL
    torch.manual_seed(2)
    s, t = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64)
    torch.testing.assert_close(forward_kl(s, t, topk=8), forward_kl_reference(s, t))


@pytest.mark.parametrize(
    "prod,ref",
    [
        (lambda s, t: forward_kl(s, t), forward_kl_reference),
        (lambda s, t: forward_kl(s, t, topk=5), lambda s, t: forward_kl_topk_reference(s, t, 5)),
        (lambda s, t: reverse_kl(s, t), reverse_kl_reference),
    ],
    ids=["forward", "forward_topk", "reverse"],
)
def test_explicit_gradients_match_autograd_reference(prod, ref):
    torch.manual_seed(3)
    s = torch.randn(7, 33, dtype=torch.float64, requires_grad=True)
    t = torch.randn(7, 33, dtype=torch.float64)
    g_out = torch.rand(7, dtype=torch.float64)  # arbitrary upstream weights (as per-token weights do)
    v1 = prod(s, t)
    (g1,) = torch.autograd.grad((v1 * g_out).sum(), s)
    v2 = ref(s, t)
    (g2,) = torch.autograd.grad((v2 * g_out).sum(), s)
    torch.testing.assert_close(v1, v2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)
    assert t.grad is None  # the teacher is a constant


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(2, 6),
    vocab=st.integers(3, 40),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["forward_kl", "forward_kl_topk", "reverse_kl"]),
)
def test_divergence_and_gradient_exactly_zero_where_distributions_are_equal(rows, vocab, seed, kind):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(rows, vocab, generator=g) * 3).requires_grad_(True)
    t = torch.randn(rows, vocab, generator=g) * 3
    equal = torch.arange(rows) % 2 == 0
    t[equal] = s.detach()[equal]  # the strategy does not change these positions
    topk = max(1, vocab // 3) if kind == "forward_kl_topk" else None
    div = token_divergence(s, t, "forward_kl" if topk else kind, topk)
    (grad,) = torch.autograd.grad(div.sum(), s)
    assert torch.all(div[equal] == 0)
    assert torch.all(grad[equal] == 0)
    assert torch.all(div[~equal] > 0)


def test_distill_terms_from_hidden_states():
    # logits = h Wᵀ / T; the terms equal the logits-level functions on those logits
    torch.manual_seed(4)
    h_s = torch.randn(5, 8, requires_grad=True)
    h_t = torch.randn(5, 8)
    W = torch.randn(11, 8, requires_grad=True)
    y = torch.randint(0, 11, (5,))
    out = distill_terms(h_s, h_t, W, y, temperature=0.7)
    s_logits, t_logits = h_s @ W.T / 0.7, h_t @ W.detach().T / 0.7
    torch.testing.assert_close(out.divergence, forward_kl_reference(s_logits, t_logits))
    torch.testing.assert_close(out.student_logp, s_logits.log_softmax(-1)[torch.arange(5), y])
    torch.testing.assert_close(out.teacher_logp, t_logits.log_softmax(-1)[torch.arange(5), y])
    out.divergence.sum().backward()
    assert W.grad is not None and h_s.grad is not None


def test_unknown_divergence_and_topk_on_reverse_raise():
    with pytest.raises(ValueError, match="unknown distill_divergence"):
        token_divergence(torch.zeros(1, 3), torch.zeros(1, 3), "js")
    with pytest.raises(ValueError, match="top-k"):
        reverse_kl(torch.zeros(1, 3), torch.zeros(1, 3), topk=2)
