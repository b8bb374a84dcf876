import math

import pytest
import torch

from sgpo.objectives import InstanceWeightEMA, cap_per_token, ema_update, instance_weights, proximal_keep_mask


def test_proximal_mask_cases():
    # π_old(ỹ_t) = 0.5 everywhere; ε_low = ε_high = 0.2
    old = torch.log(torch.full((1, 6), 0.5))
    #            teacher wants: up     up     down   down   none   up
    teacher = torch.log(torch.tensor([[0.9, 0.9, 0.1, 0.1, 0.5, 0.9]]))
    ratio = torch.tensor([[1.3, 1.1, 0.7, 1.3, 2.0, 0.5]])
    # 1: up & ρ > 1.2 → drop   2: up & ρ ≤ 1.2 → keep   3: down & ρ < 0.8 → drop
    # 4: down but ρ went up → keep   5: teacher = old → keep   6: up, ρ fell → keep
    keep = proximal_keep_mask(old + torch.log(ratio), old, teacher, 0.2, 0.2)
    assert keep.tolist() == [[0.0, 1.0, 0.0, 1.0, 1.0, 1.0]]


def test_proximal_mask_has_no_gradient_and_respects_asymmetric_eps():
    old = torch.log(torch.full((1, 2), 0.5))
    teacher = torch.log(torch.tensor([[0.9, 0.1]]))
    student = (old + torch.log(torch.tensor([[1.25, 0.75]]))).requires_grad_(True)
    # ε_high = 0.28 keeps ρ = 1.25; ε_low = 0.2 drops ρ = 0.75
    keep = proximal_keep_mask(student, old, teacher, 0.2, 0.28)
    assert keep.tolist() == [[1.0, 0.0]]
    assert not keep.requires_grad


def test_cap():
    kl = torch.tensor([[0.1, 2.0]], requires_grad=True)
    capped = cap_per_token(kl, 0.5)
    assert capped[0].tolist() == pytest.approx([0.1, 0.5])
    capped.sum().backward()
    assert kl.grad.tolist() == [[1.0, 0.0]]  # a capped token gives no gradient
    assert cap_per_token(kl, None) is kl


ACC_AUTO = torch.tensor([0.0, 0.5, 1.0, 0.25])
ACC_GUIDED = torch.tensor([1.0, 0.25, 1.0, 0.0])


def test_instance_weight_modes():
    # marginal = clip(g − a, 0, 1) = [1, 0 (−.25 clipped), 0, 0]
    assert instance_weights("marginal", ACC_AUTO, ACC_GUIDED).tolist() == [1.0, 0.0, 0.0, 0.0]
    # deficit = (1 − a)·[g > 0] = [1, .5, 0, 0 (g = 0)]
    assert instance_weights("deficit", ACC_AUTO, ACC_GUIDED).tolist() == [1.0, 0.5, 0.0, 0.0]
    assert instance_weights("constant", ACC_AUTO, ACC_GUIDED).tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="instance_weighting"):
        instance_weights("sigmoid", ACC_AUTO, ACC_GUIDED)


def test_ema_by_problem_id():
    ema = InstanceWeightEMA(0.5)
    # first sighting: the raw weight
    assert ema(["a", "b"], torch.tensor([1.0, 0.0])).tolist() == [1.0, 0.0]
    # "a" again: 0.5·1 + 0.5·0 = 0.5 ; "c" is new: 0.8
    assert ema(["a", "c"], torch.tensor([0.0, 0.8])).tolist() == pytest.approx([0.5, 0.8])
    restored = InstanceWeightEMA(0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.values == pytest.approx({"a": 0.5, "b": 0.0, "c": 0.8})
    # decay 0: no smoothing, nothing stored
    off = InstanceWeightEMA(0.0)
    assert off(["a"], torch.tensor([0.3])).tolist() == pytest.approx([0.3]) and off.values == {}
    with pytest.raises(ValueError):
        InstanceWeightEMA(1.0)


def test_ema_update_pure():
    out = ema_update(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([True, False]), 0.9)
    assert out.tolist() == pytest.approx([0.9, 0.0])
    assert math.isclose(out[0].item(), 0.9, rel_tol=1e-6)
