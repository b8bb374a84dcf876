"""The sampler/trainer importance-sampling correction (TRL 1.16's four modes), on hand-derived values."""

import math

import pytest
import torch

from sgpo.objectives import IS_MODES, sampler_correction, sampler_correction_stats

# one sequence of three tokens: π_old = (0.4, 0.8, 0.2), π_sampler = (0.2, 0.2, 0.4)
# per-token ratios π_old / π_sampler = (2, 4, 0.5)
TRAINER = torch.log(torch.tensor([[0.4, 0.8, 0.2]]))
SAMPLER = torch.log(torch.tensor([[0.2, 0.2, 0.4]]))
ALL = torch.ones(1, 3)


def test_token_truncate_clips_each_ratio():
    # clamp((2, 4, 0.5), max=3) = (2, 3, 0.5); with C_min = 0.6 also 0.5 -> 0.6
    r = sampler_correction(TRAINER, SAMPLER, ALL, "token_truncate", clip_max=3.0)
    assert r.tolist()[0] == pytest.approx([2.0, 3.0, 0.5])
    r = sampler_correction(TRAINER, SAMPLER, ALL, "token_truncate", clip_max=3.0, clip_min=0.6)
    assert r.tolist()[0] == pytest.approx([2.0, 3.0, 0.6])


def test_token_mask_zeroes_ratios_outside_the_bounds():
    # 4 > 3 leaves the loss; with C_min = 0.6 so does 0.5 < 0.6
    r = sampler_correction(TRAINER, SAMPLER, ALL, "token_mask", clip_max=3.0)
    assert r.tolist()[0] == pytest.approx([2.0, 0.0, 0.5])
    r = sampler_correction(TRAINER, SAMPLER, ALL, "token_mask", clip_max=3.0, clip_min=0.6)
    assert r.tolist()[0] == pytest.approx([2.0, 0.0, 0.0])
    # no upper bound: only the lower one acts
    r = sampler_correction(TRAINER, SAMPLER, ALL, "token_mask", clip_max=None, clip_min=0.6)
    assert r.tolist()[0] == pytest.approx([2.0, 4.0, 0.0])


def test_sequence_modes_use_the_product_over_the_masked_tokens():
    # whole sequence: 2 · 4 · 0.5 = 4 -> truncated to 3, or masked to 0
    assert sampler_correction(TRAINER, SAMPLER, ALL, "sequence_truncate", clip_max=3.0).item() == pytest.approx(3.0)
    assert sampler_correction(TRAINER, SAMPLER, ALL, "sequence_mask", clip_max=3.0).item() == 0.0
    # the middle token is padding: 2 · 0.5 = 1, inside the bounds
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    r = sampler_correction(TRAINER, SAMPLER, mask, "sequence_mask", clip_max=3.0)
    assert r.shape == (1, 1) and r.item() == pytest.approx(1.0)


def test_padding_and_unknown_sampler_logps_mean_no_correction():
    # position 1 is padding (ratio 1 whatever its values), position 2's sampler log-prob is unknown (NaN -> ratio 1)
    sampler = SAMPLER.clone()
    sampler[0, 2] = math.nan
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    r = sampler_correction(TRAINER, sampler, mask, "token_truncate", clip_max=3.0)
    assert r.tolist()[0] == pytest.approx([2.0, 1.0, 1.0])
    # sequence: only the first token counts: 2
    assert sampler_correction(TRAINER, sampler, mask, "sequence_truncate", clip_max=3.0).item() == pytest.approx(2.0)


def test_ratio_is_a_constant_and_modes_are_checked():
    trainer = TRAINER.clone().requires_grad_(True)
    r = sampler_correction(trainer, SAMPLER, ALL, "token_truncate", clip_max=3.0)
    assert not r.requires_grad
    with pytest.raises(ValueError, match="must be one of"):
        sampler_correction(TRAINER, SAMPLER, ALL, "token_clip")
    with pytest.raises(ValueError, match="needs clip_min or clip_max"):
        sampler_correction(TRAINER, SAMPLER, ALL, "sequence_truncate", clip_max=None, clip_min=None)
    assert set(IS_MODES) == {"token_truncate", "token_mask", "sequence_truncate", "sequence_mask"}


def test_stats_over_tokens_or_sequences():
    # token mode, ratios (2, 3, 0.5): mean 5.5/3, min 0.5, max 3
    # |log π_old − log π_sampler| = (log 2, log 4, log 2): mean 4·log 2 / 3, max 2·log 2
    r = sampler_correction(TRAINER, SAMPLER, ALL, "token_truncate", clip_max=3.0)
    s = sampler_correction_stats(r, TRAINER, SAMPLER, ALL)
    assert (s.num_ratios, s.num_tokens) == (3, 3)
    assert s.ratio_mean == pytest.approx(5.5 / 3) and s.ratio_min == pytest.approx(0.5) and s.ratio_max == pytest.approx(3.0)
    assert s.logp_gap_mean == pytest.approx(4 * math.log(2) / 3) and s.logp_gap_max == pytest.approx(2 * math.log(2))
    # sequence mode, two sequences: ratios 4 -> 3 (truncated) and 1 (all tokens equal): mean 2
    trainer = torch.cat([TRAINER, SAMPLER])
    sampler = torch.cat([SAMPLER, SAMPLER])
    mask = torch.ones(2, 3)
    r = sampler_correction(trainer, sampler, mask, "sequence_truncate", clip_max=3.0)
    s = sampler_correction_stats(r, trainer, sampler, mask)
    assert s.num_ratios == 2 and s.ratio_mean == pytest.approx(2.0) and s.ratio_max == pytest.approx(3.0)
    assert s.num_tokens == 6  # the gap is still per token
    # padding and NaN gaps are left out; an empty batch has no figures
    sampler = SAMPLER.clone()
    sampler[0, 0] = math.nan
    s = sampler_correction_stats(torch.ones(1, 3), TRAINER, sampler, torch.tensor([[1.0, 0.0, 1.0]]))
    assert s.num_tokens == 1 and s.logp_gap_max == pytest.approx(math.log(2))
    empty = sampler_correction_stats(torch.ones(1, 3), TRAINER, SAMPLER, torch.zeros(1, 3))
    assert empty.num_ratios == 0 and math.isnan(empty.ratio_mean) and math.isnan(empty.ratio_max)
