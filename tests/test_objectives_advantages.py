import pytest
import torch

from sgpo.objectives import group_relative_advantages

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])


def test_group_scaling_hand_values():
    # group 1 = [1,0,0,1]: mean 0.5, unbiased std = sqrt(4·0.25/3) = 0.577350 → A = ±0.5/(0.577350+1e-4) = ±0.865876
    # group 2 = [1,1,1,0]: mean 0.75, unbiased std = sqrt((3·0.0625+0.5625)/3) = 0.5
    #          → A = 0.25/0.5001 = 0.499900 (×3), −0.75/0.5001 = −1.499700
    a = group_relative_advantages(REWARDS, 4, "group")
    expected = torch.tensor([0.865876, -0.865876, -0.865876, 0.865876, 0.499900, 0.499900, 0.499900, -1.499700])
    torch.testing.assert_close(a, expected, atol=1e-6, rtol=0)


def test_batch_scaling_hand_values():
    # centred by group mean (±0.5 in group 1), scaled by the batch std: mean 0.625,
    # Σ(r−mean)² = 5·0.375² + 3·0.625² = 1.875 → std = sqrt(1.875/7) = 0.517549 → 0.5/0.517649 = 0.965906
    a = group_relative_advantages(REWARDS, 4, "batch")
    assert a[0].item() == pytest.approx(0.965906, abs=1e-6)
    assert a[7].item() == pytest.approx(-0.75 / 0.517649, abs=1e-6)


def test_no_scaling_only_centres():
    a = group_relative_advantages(REWARDS, 4, "none")
    torch.testing.assert_close(a, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]))


def test_constant_group_and_single_completion_groups_get_zero():
    assert torch.equal(group_relative_advantages(torch.ones(4), 4, "group"), torch.zeros(4))
    assert torch.equal(group_relative_advantages(torch.tensor([1.0, 0.0]), 1, "group"), torch.zeros(2))


def test_bad_shapes_and_modes_raise():
    with pytest.raises(ValueError, match="G=3"):
        group_relative_advantages(torch.ones(4), 3)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_relative_advantages(torch.ones(4), 2, "std")


def test_matches_trl_formula_on_random_rewards():
    # TRL: A = (r − mean_group) / (std_group + 1e-4), std with Bessel's correction
    torch.manual_seed(0)
    r = torch.rand(24)
    g = r.view(-1, 6)
    expected = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1)
    torch.testing.assert_close(group_relative_advantages(r, 6, "group"), expected)
