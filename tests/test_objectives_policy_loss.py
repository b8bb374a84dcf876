import math

import torch

from sgpo.objectives import GlobalCounts, aggregate, clipped_surrogate, k3_kl, shaped_off_policy


def test_clipped_surrogate_hand_cases():
    # ratio = exp(logp − old); ε = 0.2
    # A=+1, ρ=1.5: min(1.5, 1.2)   = 1.2  → ℓ = −1.2, high-clipped
    # A=−1, ρ=0.5: min(−0.5, −0.8) = −0.8 → ℓ = +0.8, low-clipped
    # A=−1, ρ=1.5: min(−1.5, −1.2) = −1.5 → ℓ = +1.5 (unclipped branch)
    # A=+1, ρ=0.5: min(0.5, 0.8)   = 0.5  → ℓ = −0.5 (unclipped branch)
    ratio = torch.tensor([[1.5], [0.5], [1.5], [0.5]])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    out = clipped_surrogate(torch.log(ratio), torch.zeros(4, 1), adv, 0.2, 0.2)
    torch.testing.assert_close(out.per_token_loss, torch.tensor([[-1.2], [0.8], [1.5], [-0.5]]))
    assert out.high_clipped.squeeze(1).tolist() == [True, False, False, False]
    assert out.low_clipped.squeeze(1).tolist() == [False, True, False, False]


def test_asymmetric_clip_and_delta():
    # ε_high = 0.28: A=+1, ρ=1.5 → min(1.5, 1.28) = 1.28
    out = clipped_surrogate(torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.28)
    assert abs(out.per_token_loss.item() + 1.28) < 1e-6
    # δ = 1.3 caps the unclipped branch: A=−1, ρ=1.5: min(−min(1.5,1.3), −1.2) = −1.3 → ℓ = 1.3
    out = clipped_surrogate(torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), torch.tensor([-1.0]), 0.2, 0.2, delta=1.3)
    assert abs(out.per_token_loss.item() - 1.3) < 1e-6


def test_on_policy_gradient_is_minus_advantage():
    # at ρ = 1 the surrogate's gradient w.r.t. logp is −A (the REINFORCE gradient)
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    out = clipped_surrogate(logp, logp.detach(), torch.tensor([0.7]))
    out.per_token_loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.7, -0.7]]))


def test_k3_kl_hand_value():
    # d = ref − logp = log 0.5 − log 0.25 = ln 2 → e^d − d − 1 = 2 − 0.693147 − 1 = 0.306853
    v = k3_kl(torch.log(torch.tensor([[0.25]])), torch.log(torch.tensor([[0.5]])))
    assert abs(v.item() - (1 - math.log(2))) < 1e-6


def test_luffy_shaping_hand_value():
    # p = 0.1, γ = 0.1 → f = 0.5 ; A = 2 → ℓ = −1
    v = shaped_off_policy(torch.log(torch.tensor([[0.1]])), torch.tensor([2.0]))
    assert abs(v.item() + 1.0) < 1e-6


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_aggregation_modes_hand_values():
    counts = GlobalCounts(num_sequences=2, num_tokens=5, max_completion_length=4)
    # grpo: (6/3 + 9/2) / 2 = 3.25 ; dr_grpo: 15 / (2·4) = 1.875 ; dapo: 15 / 5 = 3
    assert aggregate(PER_TOKEN, MASK, "seq-mean-token-mean", counts).item() == 3.25
    assert aggregate(PER_TOKEN, MASK, "seq-mean-token-sum-norm", counts).item() == 1.875
    assert aggregate(PER_TOKEN, MASK, "token-mean", counts).item() == 3.0


def test_aggregation_invariant_to_micro_batch_split():
    torch.manual_seed(0)
    x = torch.randn(8, 7, dtype=torch.float64)
    m = (torch.rand(8, 7) > 0.3).long()
    m[3] = 0  # a sequence with no scored token
    counts = GlobalCounts(num_sequences=8, num_tokens=float(m.sum()), max_completion_length=7)
    for mode in ("seq-mean-token-mean", "seq-mean-token-sum-norm", "token-mean"):
        whole = aggregate(x, m, mode, counts)
        for parts in (1, 2, 4):
            split = sum(aggregate(xc, mc, mode, counts) for xc, mc in zip(x.chunk(parts), m.chunk(parts)))
            assert abs(split.item() - whole.item()) <= 1e-6, (mode, parts)


def test_written_out_gradients_match_autograd():
    # ∂ℓ/∂logp of the clipped surrogate (with and without δ) and of k3, against autograd, on ratios
    # spread over both sides of both clip bounds (ties at the bounds have measure zero here)
    from sgpo.objectives import clipped_surrogate_grad, k3_kl_grad

    g = torch.Generator().manual_seed(0)
    logp = torch.randn(6, 9, generator=g, dtype=torch.float64) * 0.5 - 1
    old = logp + torch.randn(6, 9, generator=g, dtype=torch.float64) * 0.4
    adv = torch.randn(6, generator=g, dtype=torch.float64)
    ref = logp + torch.randn(6, 9, generator=g, dtype=torch.float64) * 0.3
    for delta in (None, 1.3):
        x = logp.clone().requires_grad_(True)
        clipped_surrogate(x, old, adv, 0.2, 0.28, delta).per_token_loss.sum().backward()
        torch.testing.assert_close(clipped_surrogate_grad(logp, old, adv, 0.2, 0.28, delta), x.grad)
    x = logp.clone().requires_grad_(True)
    k3_kl(x, ref).sum().backward()
    torch.testing.assert_close(k3_kl_grad(logp, ref), x.grad)
    # LUFFY's shaped off-policy term −A·p/(p+γ), at γ other than the default 0.1 (the chunked head's hint)
    from sgpo.objectives import shaped_off_policy_grad

    for gamma in (0.1, 0.5):
        x = logp.clone().requires_grad_(True)
        shaped_off_policy(x, adv, gamma).sum().backward()
        torch.testing.assert_close(shaped_off_policy_grad(logp, adv, gamma), x.grad)


def test_token_weights_reproduce_aggregate():
    from sgpo.objectives import token_weights

    counts = GlobalCounts(num_sequences=2, num_tokens=5, max_completion_length=4)
    for mode in ("seq-mean-token-mean", "seq-mean-token-sum-norm", "token-mean"):
        w = token_weights(MASK.double(), mode, counts)
        assert (w * PER_TOKEN.double()).sum().item() == aggregate(PER_TOKEN, MASK, mode, counts).item()
    # grpo: a token of the 3-token sequence weighs 1/(3·2)
    assert token_weights(MASK.double(), "seq-mean-token-mean", counts)[0, 0].item() == 1 / 6
