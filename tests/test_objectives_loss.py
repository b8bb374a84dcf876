"""`sgpo_loss` on batches small enough to compute on paper (torchtune's loss-test style).

The LM head is the 2×2 identity, so a hidden state *is* the logit vector and every value below is
derived by hand from the softmax of two logits:

    z = [0, 0]     -> p = [1/2, 1/2]
    z = [0, ln 3]  -> p = [1/4, 3/4]

and ∂ log p(y) / ∂z = onehot(y) − p, ∂ KL(q‖p) / ∂z_student = p − q. Both LM-head paths (plain and
chunked) must give these numbers.
"""

import math

import pytest
import torch

from sgpo.objectives import GlobalCounts, LossConfig, LossInputs, sgpo_loss

LN2, LN3 = math.log(2.0), math.log(3.0)
HEADS = ["plain", "chunked"]


def z(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def rl_inputs(old_logps=None, ref_logps=None, mask=(1.0, 1.0)):
    # one autonomous row, two tokens: y = [0, 1] at logits [0, 0] and [0, ln 3]
    # log p(y_0) = ln(1/2), log p(y_1) = ln(3/4); advantage A = 2
    hidden = z([0.0, 0.0], [0.0, LN3]).unsqueeze(0).requires_grad_(True)  # (1, 2, 2)
    return LossInputs(
        head_weight=torch.eye(2, dtype=torch.float64, requires_grad=True),
        head_bias=None,
        auto_hidden=hidden,
        auto_ids=torch.tensor([[0, 1]]),
        auto_mask=torch.tensor([list(mask)]),
        advantages=torch.tensor([2.0]),
        auto_counts=GlobalCounts(num_sequences=1, num_tokens=sum(mask), max_completion_length=4),
        old_logps=old_logps,
        ref_logps=ref_logps,
    )


@pytest.mark.parametrize("head", HEADS)
def test_rl_term_on_policy(head):
    x = rl_inputs()
    out = sgpo_loss(x, LossConfig(loss_type="dapo", head=head, head_chunk_size=1))
    # on-policy: ρ = 1 at both tokens, ℓ_t = −A·ρ = −2; dapo: Σ ℓ / N_tok = (−2 − 2)/2 = −2
    assert out.loss.item() == pytest.approx(-2.0)
    out.loss.backward()
    # ∂L/∂log p_t = −A/N_tok = −1, so ∂L/∂z_t = −(onehot(y_t) − p_t):
    #   t0: −([1, 0] − [1/2, 1/2]) = [−1/2, 1/2];   t1: −([0, 1] − [1/4, 3/4]) = [1/4, −1/4]
    torch.testing.assert_close(x.auto_hidden.grad[0], z([-0.5, 0.5], [0.25, -0.25]))
    # ∂L/∂W = Σ_t (∂L/∂z_t) h_tᵀ; h_0 = 0, so only t1: [1/4, −1/4]ᵀ [0, ln 3]
    torch.testing.assert_close(x.head_weight.grad, z([0.0, 0.25 * LN3], [0.0, -0.25 * LN3]))
    assert out.metrics["clip/region"] == (0.0, 2.0)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("loss_type,expected", [("dapo", -2.2), ("grpo", -2.2), ("dr_grpo", -1.1)])
def test_rl_term_clipped_with_old_logps(head, loss_type, expected):
    # π_old(y_0) = 1/4 (ρ_0 = (1/2)/(1/4) = 2 > 1 + ε_high = 1.2, A > 0: clipped at 1.2 -> ℓ_0 = −2.4, no
    # gradient); π_old(y_1) = 3/4 (ρ_1 = 1 -> ℓ_1 = −2). dapo: (−2.4 − 2)/2 = −2.2; grpo, one sequence:
    # the same; dr_grpo: Σ ℓ / (1 sequence · max_completion_length 4) = −4.4/4 = −1.1
    x = rl_inputs(old_logps=torch.tensor([[math.log(0.25), math.log(0.75)]]))
    out = sgpo_loss(x, LossConfig(loss_type=loss_type, epsilon=0.2, epsilon_high=0.2, head=head))
    assert out.loss.item() == pytest.approx(expected)
    out.loss.backward()
    # only t1 carries gradient: −A · ρ_1 · (onehot − p) / norm, norm = 2 (dapo, grpo) or 4 (dr_grpo)
    scale = 1.0 if loss_type != "dr_grpo" else 0.5
    torch.testing.assert_close(x.auto_hidden.grad[0], z([0.0, 0.0], [0.25 * scale, -0.25 * scale]))
    assert out.metrics["clip/high"] == (1.0, 2.0) and out.metrics["clip/low"] == (0.0, 2.0)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bias_correction", [False, True], ids=["k3", "k3-times-ratio"])
def test_rl_term_reference_kl_and_importance_weights(head, bias_correction):
    # β = 0.5, π_ref(y_0) = π_θ(y_0)/2 (d = ln π_ref − ln π_θ = −ln 2), π_ref(y_1) = π_θ(y_1) (d = 0);
    # k3 = e^d − d − 1: t0 = 1/2 + ln 2 − 1 ≈ 0.19315, t1 = 0. Importance weights [1, 0.5] scale ℓ_t.
    # ℓ = [−2·1 + 0.5·0.19315, −2·0.5] -> dapo: (−2 + 0.096574 − 1)/2 = −1.451713 (on-policy, ρ = 1 in value,
    # so the bias correction ρ·k3 changes the gradient only)
    lp = torch.tensor([[math.log(0.5), math.log(0.75)]])
    x = rl_inputs(ref_logps=lp + torch.tensor([[-LN2, 0.0]]))
    x.is_weights = torch.tensor([[1.0, 0.5]])
    out = sgpo_loss(x, LossConfig(loss_type="dapo", beta=0.5, head=head, use_bias_correction_kl=bias_correction))
    k3 = 0.5 + LN2 - 1
    assert out.loss.item() == pytest.approx((-2 + 0.5 * k3 - 1) / 2)
    assert out.metrics["kl"][0] == pytest.approx(k3)
    out.loss.backward()
    # ∂ℓ_0/∂log p = −A·1 + β(1 − e^d) = −2 + 0.5·(1 − 1/2) = −1.75; with ρ·k3: −A + β·ρ·(k3 + 1 − e^d)
    # = −2 + 0.5·(0.19315 + 1/2) = −1.653426; ∂ℓ_1/∂log p = −A·0.5 = −1; all / 2
    #   t0: g_0 · ([1, 0] − [1/2, 1/2]) / 2;  t1: −0.5 · ([0, 1] − [1/4, 3/4]) = [0.125, −0.125]
    g0 = (-2 + 0.5 * (k3 + 0.5) if bias_correction else -1.75) / 2
    torch.testing.assert_close(x.auto_hidden.grad[0], z([g0 / 2, -g0 / 2], [0.125, -0.125]))


def distill_inputs(old=None, weight=0.5, n_global=4.0):
    # one distilled row, two tokens ỹ = [1, 1]; the student sees logits [0, 0] (p = [1/2, 1/2]) at both,
    # the teacher (with the strategy) [0, ln 3] (q = [1/4, 3/4]) at both; the RL part is fully masked
    x = rl_inputs(mask=(0.0, 0.0))
    x.distill_hidden = z([0.0, 0.0], [0.0, 0.0]).unsqueeze(0).requires_grad_(True)
    x.distill_ids = torch.tensor([[1, 1]])
    x.distill_mask = torch.tensor([[1.0, 1.0]])
    x.distill_weights = torch.tensor([weight])
    x.teacher_hidden = z([0.0, LN3], [0.0, LN3]).unsqueeze(0)
    x.distill_old_logps = old
    x.distill_tokens = n_global
    return x


# KL(q‖p) = 1/4·ln((1/4)/(1/2)) + 3/4·ln((3/4)/(1/2)) = −(1/4) ln 2 + (3/4) ln(3/2)
KL = -0.25 * LN2 + 0.75 * math.log(1.5)


@pytest.mark.parametrize("head", HEADS)
def test_distill_term_weighted_and_normalised_by_global_tokens(head):
    x = distill_inputs()
    out = sgpo_loss(x, LossConfig(distill_coef=2.0, head=head, head_chunk_size=1))
    # λ · w · Σ_t KL_t / N = 2 · 0.5 · 2·KL / 4 = KL/2 ≈ 0.0654 (N counts the whole step's tokens)
    assert out.loss.item() == pytest.approx(KL / 2)
    assert out.metrics["distill/kl"] == pytest.approx((2 * KL, 2.0))
    out.loss.backward()
    # ∂/∂z_student = λ w / N · (p − q) = 0.25 · ([1/2, 1/2] − [1/4, 3/4]) = [1/16, −1/16] at each token
    torch.testing.assert_close(x.distill_hidden.grad[0], z([1 / 16, -1 / 16], [1 / 16, -1 / 16]))
    torch.testing.assert_close(x.auto_hidden.grad, torch.zeros_like(x.auto_hidden))  # masked RL rows


@pytest.mark.parametrize("head", HEADS)
def test_proximal_mask_drops_a_token_the_student_already_moved(head):
    # π_old(ỹ=1 | x) = 1/2 at t0 (ρ = 1: kept) and 1/4 at t1 (ρ = (1/2)/(1/4) = 2 > 1.2, and the teacher
    # wants it up: q(1) = 3/4 > 1/4 -> dropped). Loss: 2 · 0.5 · KL / 4 = KL/4; gradient only at t0.
    old = torch.tensor([[math.log(0.5), math.log(0.25)]])
    x = distill_inputs(old=old)
    out = sgpo_loss(x, LossConfig(distill_coef=2.0, head=head))
    assert out.loss.item() == pytest.approx(KL / 4)
    assert out.metrics["distill/masked_frac"] == (1.0, 2.0)
    out.loss.backward()
    torch.testing.assert_close(x.distill_hidden.grad[0], z([1 / 16, -1 / 16], [0.0, 0.0]))
    # without the constraint both tokens count again
    y = distill_inputs(old=old)
    assert sgpo_loss(y, LossConfig(distill_coef=2.0, head=head, distill_proximal=False)).loss.item() == pytest.approx(KL / 2)


@pytest.mark.parametrize("head", HEADS)
def test_kl_cap_and_zero_weight(head):
    # cap 0.1 < KL ≈ 0.1308: each token contributes the cap and no gradient: 2 · 0.5 · 2·0.1 / 4 = 0.05
    x = distill_inputs()
    out = sgpo_loss(x, LossConfig(distill_coef=2.0, distill_kl_cap=0.1, head=head))
    assert out.loss.item() == pytest.approx(0.05)
    out.loss.backward()
    torch.testing.assert_close(x.distill_hidden.grad, torch.zeros_like(x.distill_hidden))
    # w = 0: the term and its gradient vanish, N is unchanged
    assert sgpo_loss(distill_inputs(weight=0.0), LossConfig(head=head)).loss.item() == 0.0


@pytest.mark.parametrize("head", HEADS)
def test_imitation_and_reverse_kl(head):
    # imitation: −log p(ỹ_t) = ln 2 per token -> 2 · 0.5 · 2 ln 2 / 4 = ln 2 / 2
    out = sgpo_loss(distill_inputs(), LossConfig(distill_coef=2.0, distill_divergence="imitation", head=head))
    assert out.loss.item() == pytest.approx(LN2 / 2)
    # reverse KL(p‖q) = 1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = (1/2)(ln 2 + ln(2/3)) per token
    rkl = 0.5 * (LN2 + math.log(2 / 3))
    out = sgpo_loss(distill_inputs(), LossConfig(distill_coef=2.0, distill_divergence="reverse_kl", head=head))
    assert out.loss.item() == pytest.approx(rkl / 2)


@pytest.mark.parametrize("head", HEADS)
def test_nothing_to_train_on_gives_a_zero_gradient_not_an_error(head):
    # every autonomous token masked, no distilled row: the loss is 0 and still backpropagates (zeros),
    # so a micro-batch like this neither crashes backward() nor leaves a DDP process without gradients
    x = rl_inputs(mask=(0.0, 0.0))
    out = sgpo_loss(x, LossConfig(head=head))
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert torch.equal(x.auto_hidden.grad, torch.zeros_like(x.auto_hidden))
    assert torch.equal(x.head_weight.grad, torch.zeros_like(x.head_weight))


def test_combined_loss_is_the_sum_of_the_terms():
    # RL on-policy (−2, from test_rl_term_on_policy) + distillation (KL/2): the two terms add, and so do
    # their gradients on the shared LM head
    x = distill_inputs()
    x.auto_mask = torch.tensor([[1.0, 1.0]])
    x.auto_counts = GlobalCounts(1, 2, 4)
    out = sgpo_loss(x, LossConfig(distill_coef=2.0, head="plain"))
    assert out.loss.item() == pytest.approx(-2.0 + KL / 2)
    out.loss.backward()
    # ∂W = Σ_t g_t h_tᵀ: RL t1 gives [1/4, −1/4]ᵀ[0, ln 3]; the student's distilled hidden states are 0
    torch.testing.assert_close(x.head_weight.grad, z([0.0, 0.25 * LN3], [0.0, -0.25 * LN3]))
    assert set(out.metrics) >= {"rl/loss", "distill/loss", "distill/kl", "distill/masked_frac", "clip/region"}


@pytest.mark.parametrize("head", HEADS)
def test_off_policy_row_takes_the_shaped_term_without_clipping(head):
    # LUFFY: the row is a strong response (off-policy). With p = π_θ(y_t) = [1/2, 3/4], A = 2, γ = 0.1:
    #   ℓ_t = −A p/(p+γ):  t0 −2·0.5/0.6 = −5/3;  t1 −2·0.75/0.85 = −30/17;  dapo: mean of the two
    # old log-probs that would clip a rollout (ρ_0 = 2) change nothing here: no ratio, no clip.
    # ∂ℓ/∂log p = −A γ p/(p+γ)²:  t0 −2·0.1·0.5/0.36 = −5/18;  t1 −2·0.1·0.75/0.7225 = −0.15/0.7225
    x = rl_inputs(old_logps=torch.tensor([[math.log(0.25), math.log(0.75)]]))
    x.auto_off_policy = torch.tensor([True])
    out = sgpo_loss(x, LossConfig(loss_type="dapo", policy_shaping_gamma=0.1, head=head))
    assert out.loss.item() == pytest.approx((-5 / 3 - 30 / 17) / 2)
    assert out.metrics["clip/region"] == (0.0, 2.0)
    out.loss.backward()
    g0, g1 = -5 / 18 / 2, -0.15 / 0.7225 / 2  # / N_tok
    # ∂L/∂z_t = g_t (onehot(y_t) − p_t): t0 g0·[1/2, −1/2]; t1 g1·[−1/4, 1/4]
    torch.testing.assert_close(x.auto_hidden.grad[0], z([g0 / 2, -g0 / 2], [-g1 / 4, g1 / 4]))
