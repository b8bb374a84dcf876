"""The gate's criteria on synthetic figures, each expected verdict derived by hand (in the comments).

Each criterion is tested just inside and just outside its threshold, so that a changed threshold, a
flipped comparison or a wrong denominator fails a test."""

from __future__ import annotations

import pytest

from sgpo.world import gate


def test_c1_headroom_counts_the_middle_band_and_both_ends():
    # 10 problems: 0, 0, 1, then 7 in [0.1, 0.9] (0.1 and 0.9 included) -> middle 0.7, zero 0.2, one 0.1: pass
    rates = [0.0, 0.0, 1.0, 0.1, 0.2, 0.5, 0.5, 0.6, 0.8, 0.9]
    c = gate.headroom(rates)
    assert c.passed and "in [0.1, 0.9] 0.70, at 0 0.20, at 1 0.10" in c.figure
    # a third problem at 0 (replacing 0.5): zero 0.3 > 0.25 -> fail although middle 0.6 >= 0.4
    assert not gate.headroom([0.0, 0.0, 1.0, 0.1, 0.2, 0.0, 0.5, 0.6, 0.8, 0.9]).passed
    # two at 1: one 0.2 > 0.15 -> fail
    assert not gate.headroom([0.0, 0.0, 1.0, 1.0, 0.2, 0.5, 0.5, 0.6, 0.8, 0.9]).passed
    # 0.05 and 0.95 lie outside the band: middle 3/10 < 0.4 -> fail
    assert not gate.headroom([0.05, 0.05, 0.95, 0.95, 0.05, 0.95, 0.05, 0.5, 0.5, 0.5]).passed
    assert not gate.headroom([]).passed


def test_c2_signal_allows_five_percent_of_zero_gradient_steps():
    assert gate.signal(1, 20).passed  # 5.0% <= 5%
    assert not gate.signal(2, 20).passed  # 10%
    assert not gate.signal(0, 0).passed  # no GRPO step measured: no evidence


def test_c3_guidance_needs_every_family_guided_and_half_with_a_gap():
    fams = {  # guided all >= 0.7; gaps 0.5, 0.2, 0.1, 0.0 -> 2 of 4 (0.2 counts): pass
        "a": {"auto": 0.3, "guided": 0.8},
        "b": {"auto": 0.5, "guided": 0.7},
        "c": {"auto": 0.8, "guided": 0.9},
        "d": {"auto": 0.9, "guided": 0.9},
    }
    c = gate.guidance(fams)
    assert c.passed and "lowest guided 0.70 (b); gap ≥ 0.2 in 2 of 4 families" == c.figure
    assert not gate.guidance({**fams, "b": {"auto": 0.5, "guided": 0.69}}).passed  # one family below 0.7
    assert not gate.guidance({**fams, "a": {"auto": 0.65, "guided": 0.8}}).passed  # gaps 0.15, 0.2: 1 of 4


def test_c4_teacher_entropy_and_rank_correlation():
    # entropy mean (0.1 + 0.3 + 0.2) / 3 = 0.2 (>= 0.2); KL and NLL in opposite order: Spearman -1 -> pass
    c = gate.teacher_not_trajectory([0.1, 0.3, 0.2], kl=[0.1, 0.2, 0.3, 0.4], nll=[4.0, 3.0, 2.0, 1.0])
    assert c.passed and "entropy 0.200" in c.figure and "Spearman(KL, NLL) -1.000" in c.figure
    # the same order (a one-hot teacher: KL = NLL up to a constant): Spearman 1 > 0.8 -> fail
    assert not gate.teacher_not_trajectory([0.3], kl=[0.1, 0.2, 0.3, 0.4], nll=[1.1, 1.2, 1.3, 1.4]).passed
    # ranks (1,2,3,4,5) against (2,1,3,4,5): rho = 1 - 6*2/(5*24) = 0.9 > 0.8 -> fail
    assert not gate.teacher_not_trajectory([0.3], kl=[1, 2, 3, 4, 5], nll=[2, 1, 3, 4, 5]).passed
    # ranks (1,2,3,4,5) against (2,1,4,3,5): rho = 1 - 6*4/120 = 0.8 -> pass (<= 0.8)
    assert gate.teacher_not_trajectory([0.3], kl=[1, 2, 3, 4, 5], nll=[2, 1, 4, 3, 5]).passed
    assert not gate.teacher_not_trajectory([0.19], kl=[0.1, 0.2, 0.3], nll=[3.0, 2.0, 1.0]).passed  # entropy too low
    with pytest.raises(ValueError):
        gate.teacher_not_trajectory([0.3], kl=[0.1], nll=[0.1, 0.2])


def test_c5_shortcuts_majority_and_coincidence():
    assert gate.shortcuts({"a": 0.11, "b": 0.2}, 0.05).passed  # both thresholds inclusive
    assert not gate.shortcuts({"a": 0.11, "b": 0.21}, 0.01).passed
    assert not gate.shortcuts({"a": 0.11}, 0.051).passed


def test_c6_positive_controls_need_gain_interval_and_an_inner_learning_rate():
    grid = [1e-5, 3e-5, 1e-4]
    gains = {"grpo": (0.06, 0.01, 0.11), "sft": (0.05, 0.002, 0.09)}
    assert gate.positive_controls(gains, {"grpo": 3e-5, "sft": 3e-5}, grid).passed
    assert not gate.positive_controls({**gains, "sft": (0.049, 0.01, 0.09)}, {"grpo": 3e-5, "sft": 3e-5}, grid).passed
    assert not gate.positive_controls(
        {**gains, "sft": (0.08, 0.0, 0.16)}, {"grpo": 3e-5, "sft": 3e-5}, grid
    ).passed  # CI touches 0
    edge = gate.positive_controls(gains, {"grpo": 1e-4, "sft": 3e-5}, grid)  # GRPO chose the largest rate
    assert not edge.passed and "edge: grpo" in edge.figure
    assert not gate.positive_controls(gains, {"grpo": 1e-5, "sft": 3e-5}, grid).passed  # the smallest


def test_c7_capacity_allows_a_drop_of_at_most_a_tenth():
    assert gate.capacity({"grpo": {"a": 0.2, "b": -0.1}, "sft": {"a": 0.0}}).passed
    c = gate.capacity({"grpo": {"a": 0.2, "b": -0.1}, "sft": {"a": -0.11}})
    assert not c.passed and "-0.110 (sft, a)" in c.figure


def test_c8_resolution():
    assert gate.resolution(0.03).passed and not gate.resolution(0.031).passed


def test_c9_generalisation_band_and_guidance():
    ok = {"novel": {"auto": 0.05, "guided": 0.5}, "longer": {"auto": 0.6, "guided": 0.9}}
    assert gate.generalisation(ok).passed  # both band ends inclusive
    assert not gate.generalisation({**ok, "novel": {"auto": 0.04, "guided": 0.9}}).passed
    assert not gate.generalisation({**ok, "longer": {"auto": 0.61, "guided": 0.9}}).passed
    assert not gate.generalisation({**ok, "longer": {"auto": 0.3, "guided": 0.49}}).passed
    assert not gate.generalisation({}).passed


def test_c10_scaling_needs_two_sizes_twice_apart_each_passing_c1_to_c8():
    good = [gate.Criterion(n, "", "", True) for n in gate.PER_SIZE]
    c9_fail = [*good, gate.Criterion("C9", "", "", False)]  # C9 is not asked of every size
    assert gate.scaling({"small": (1_000_000, good), "large": (2_000_000, c9_fail)}).passed
    assert not gate.scaling({"small": (1_000_000, good), "large": (1_900_000, good)}).passed  # 1.9x apart
    bad = [gate.Criterion(n, "", "", n != "C6") for n in gate.PER_SIZE]
    c = gate.scaling({"small": (1_000_000, good), "large": (3_000_000, bad)})
    assert not c.passed and "fails C6" in c.figure
    assert not gate.scaling({"small": (1_000_000, good)}).passed


def test_c11_mechanisms_need_two_optimizer_steps_per_generation_batch():
    assert gate.mechanisms({"grpo": 2, "sgpo": 2}, 0.01, None).passed
    c = gate.mechanisms({"grpo": 2, "sgpo": 1}, 0.01, 0.0)
    assert not c.passed and "masked fraction 0.000" in c.figure


def test_format_table_marks_failures():
    table = gate.format_table([gate.Criterion("C8", "resolution", "CI half-width 0.040", False)])
    assert table.splitlines()[-1] == "| C8 resolution | CI half-width 0.040 | FAIL |"


# ----------------------------------------------------------------------------- measurements


def test_shortcut_stats_by_hand():
    from sgpo.world.gate_measure import shortcut_stats

    # list 1 2 3: sum 6, sum_even 2, sum_odd 4, sum_big 0, sum_small 6, sum_alt 1+3 = 4
    # list 5 5:   sum 10, sum_even 0, sum_odd 10, sum_big 10, sum_small 0, sum_alt 5
    records = [
        {"family": "sum", "problem": "sum up the list . list : 1 2 3", "answer": "6"},
        {"family": "sum", "problem": "sum up the list . list : 5 5", "answer": "10"},
        {"family": "sum_alt", "problem": "sum the numbers in odd places . list : 1 2 3", "answer": "4"},
    ]
    majority, coincidence = shortcut_stats(records)
    # sum: answers 6, 10 -> most common 1 of 2; sum_alt: 1 of 1
    assert majority == {"sum": 0.5, "sum_alt": 1.0}
    # 3 records x 5 other families = 15 pairs; right by coincidence: record 1 (6): sum_small 6 -> 1;
    # record 2 (10): sum_odd 10, sum_big 10 -> 2; record 3 (4): sum_odd 4 -> 1; 4 of 15
    assert coincidence == pytest.approx(4 / 15)


def test_the_v2_world_has_no_shortcut():
    from sgpo.world.gate_measure import shortcut_stats
    from sgpo.world.generate import WorldSpec, build_world

    majority, coincidence = shortcut_stats(build_world(0, WorldSpec(per_family={"train": 300}))["train"])
    assert gate.shortcuts(majority, coincidence).passed, (majority, coincidence)


def test_method_span_and_teacher_token_stats_on_a_tiny_model():
    from sgpo.world.extractor import fill_strategies
    from sgpo.world.families import get_family
    from sgpo.world.gate_measure import critical_flags, method_span, teacher_token_stats
    from sgpo.world.generate import WorldSpec, build_world
    from sgpo.world.model import ModelSpec, build_model
    from sgpo.world.prompt import WORLD_PROMPT_FORMAT
    from sgpo.world.tokenizer import build_tokenizer, world_texts

    assert method_span("method : add every number . 1>1 . answer : \\boxed{1}") == (9, 25)
    assert method_span("answer : \\boxed{1}") is None
    rows = fill_strategies(build_world(0, WorldSpec(per_family={"warmup": 3}))["warmup"])
    tok = build_tokenizer(world_texts(rows, WORLD_PROMPT_FORMAT))
    # the method phrase's tokens, and only they, are critical (as the data's critical_spans say)
    for r in rows:
        ids = tok(r["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        flags = critical_flags(tok, ids)
        assert "".join(tok.decode([t]) for t, f in zip(ids, flags) if f).strip() == get_family(r["family"]).method
    model = build_model(tok, ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       num_key_value_heads=2), seed=0)  # fmt: skip
    stats = teacher_token_stats(model, tok, rows[:4], max_new_tokens=6)
    assert stats["rollouts"] == 4 and len(stats["kl"]) == len(stats["nll"]) == stats["tokens"]
    # 6 sampled tokens per rollout (an untrained model rarely samples the EOS); it writes no method
    # phrase, so every token is non-critical
    assert 4 <= stats["tokens"] <= 4 * 6 and len(stats["noncritical_entropy"]) == stats["tokens"]
    assert all(k >= 0 for k in stats["kl"]) and all(v > 0 for v in stats["nll"])
    # near-uniform next-token distributions of a random model: entropy close to log(vocabulary)
    import math

    assert min(stats["noncritical_entropy"]) > 0.5 * math.log(len(tok))


def test_the_gate_report_is_written_per_size_and_marked_incomplete_until_every_size_is_in():
    """An interrupted gate leaves the figures of the sizes it finished, never a verdict: incomplete
    means not passed, and C10 is judged only once every size is measured."""
    import time

    from sgpo.world.gate_run import _report

    passing = [gate.Criterion(f"C{i}", "t", "f", True) for i in range(1, 9)]
    head = {"config_hash": "ab" * 32, "sizes": {}}
    one = _report(head, {"base": (1_000_000, passing)}, 2, {"x": 1.0}, time.perf_counter())
    assert one["complete"] is False and one["passed"] is False and "scaling" not in one
    assert "INCOMPLETE (1 of 2 model sizes measured" in one["table"] and "| C1 t | f | pass |" in one["table"]
    two = _report(head, {"base": (1_000_000, passing), "larger": (2_500_000, passing)}, 2, {}, time.perf_counter())
    assert two["complete"] is True and two["passed"] is True and two["scaling"]["name"] == "C10"
    assert "PASSED" in two["table"].splitlines()[0] and "INCOMPLETE" not in two["table"]
    failing = [*passing[:3], gate.Criterion("C4", "t", "f", False), *passing[4:]]
    three = _report(head, {"base": (1_000_000, failing), "larger": (2_500_000, passing)}, 2, {}, time.perf_counter())
    assert three["passed"] is False and "NOT PASSED" in three["table"].splitlines()[0]
