"""The pre-registered analysis (`sgpo.world.claims`): hand-derived p-values, Holm's correction, the
shared paired resampling, the primary endpoint's best-baseline rule and the claims' verdict rules."""

from __future__ import annotations

import numpy as np
import pytest

from sgpo.world import claims


def test_bootstrap_p_by_hand():
    # differences -1, 1, 2, 3: one at or below 0, three at or above: p = 2 (1 + 1) / (4 + 1) = 0.8
    assert claims.bootstrap_p(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.8)
    # 99 positive differences: none on the other side: p = 2 (0 + 1) / 100 = 0.02, never 0
    assert claims.bootstrap_p(np.full(99, 0.1)) == pytest.approx(0.02)
    assert claims.bootstrap_p(np.zeros(9)) == 1.0  # all at 0: both tails full, capped at 1


def test_holm_by_hand():
    # sorted: a 0.01 x 3 = 0.03; c 0.03 x 2 = 0.06; b 0.04 x 1 = 0.04, raised to 0.06 (monotone)
    assert claims.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert claims.holm({"a": 0.5, "b": 0.9}) == pytest.approx({"a": 1.0, "b": 1.0})  # capped at 1


def test_every_method_is_resampled_with_the_same_draw():
    rng = np.random.default_rng(3)
    a = rng.random((3, 50))
    means = claims.resample_means({"a": a, "b": a + 0.1, "c": rng.random((3, 50))}, samples=200)
    # the same seeds and problems in every resample: a constant shift survives exactly
    np.testing.assert_allclose(means["b"] - means["a"], 0.1, atol=1e-12)
    assert np.std(means["c"] - means["a"]) > 0
    with pytest.raises(ValueError, match="same"):
        claims.resample_means({"a": a, "b": a[:, :10]}, samples=5)


def test_paired_bootstrap_by_hand_and_against_a_plain_loop():
    rng = np.random.default_rng(5)
    b = (rng.random((4, 30)) < 0.5).astype(float)
    # a = b everywhere plus one problem (of 30) turned right in every seed that b got wrong: the
    # difference is paired, so its mean is 1/30 x (share of seeds where b missed it)
    a = b.copy()
    a[:, 7] = 1.0
    expected = float(np.mean(1.0 - b[:, 7])) / 30
    out = claims.paired_bootstrap(a, b, samples=300)
    assert out["mean_difference"] == pytest.approx(expected) and out["samples"] == 300
    # a plain reference: per resample, S seeds then P problems drawn with replacement from one generator
    draw, diffs = np.random.default_rng(0), []
    for _ in range(300):
        rows, cols = draw.integers(4, size=4), draw.integers(30, size=30)
        diffs.append((a - b)[rows][:, cols].mean())
    assert out["ci95"] == pytest.approx(list(np.percentile(diffs, [2.5, 97.5])))


def test_paired_bootstrap_pairs_seed_with_seed_and_problem_with_problem():
    a = [[1, 0, 1, 0, 1, 1], [0, 0, 1, 1, 1, 0], [1, 1, 0, 0, 0, 1]]
    same = claims.paired_bootstrap(a, a, samples=300)
    assert same["mean_difference"] == 0 and same["ci95"] == [0.0, 0.0]  # unpaired resampling would spread it
    shifted = [[1] * 6] * 3
    c = claims.paired_bootstrap(shifted, a, samples=500)
    assert c["mean_difference"] == pytest.approx(1 - 10 / 18)
    assert c["ci95"][0] <= c["mean_difference"] <= c["ci95"][1] and c["ci95"][0] < c["ci95"][1]
    assert claims.paired_bootstrap(a, shifted, samples=500)["ci95"] == pytest.approx([-c["ci95"][1], -c["ci95"][0]])


def test_bootstrap_interval_narrows_with_more_problems():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, size=(3, 30))
    large = np.tile(small, (1, 10))
    zero = np.zeros_like(small)
    w_small = np.diff(claims.paired_bootstrap(small, zero, 400)["ci95"])[0]
    w_large = np.diff(claims.paired_bootstrap(large, np.zeros_like(large), 400)["ci95"])[0]
    assert w_large < w_small


def test_the_primary_endpoint_is_sgpo_minus_the_best_baseline():
    ones = np.ones((3, 40))
    base = {"grpo": 0.5 * ones, "sft": 0.6 * ones, "luffy": 0.4 * ones}
    # constants: every resample gives the same means, so the interval is a point
    worse = claims.analyse({"base/test": {**base, "sgpo": 0.55 * ones}}, samples=100)
    assert worse["primary"]["best"] == "sft" and worse["primary"]["difference"] == pytest.approx(-0.05)
    assert worse["primary"]["ci95"] == pytest.approx([-0.05, -0.05]) and worse["primary"]["verdict"] == "refuted"
    assert worse["claims"][1]["verdict"] == "refuted"
    better = claims.analyse({"base/test": {**base, "sgpo": 0.65 * ones}}, samples=100)
    assert better["primary"]["verdict"] == "shown" and better["claims"][1]["verdict"] == "shown"
    # the best is re-chosen in every resample: two noisy baselines of equal mean make the best's
    # resampled mean exceed either's on average, so SGPO (equal to them) is not shown better
    rng = np.random.default_rng(0)
    noisy = {m: (rng.random((3, 200)) < 0.5).astype(float) for m in ("grpo", "sft", "luffy")}
    tie = claims.analyse({"base/test": {**noisy, "sgpo": noisy["grpo"].copy()}}, samples=400)
    assert tie["primary"]["verdict"] == "not shown" and tie["primary"]["ci95"][0] < 0
    # a plain reference: the percentiles of SGPO minus the largest baseline mean of each resample
    m = claims.resample_means({**noisy, "sgpo": noisy["grpo"]}, samples=400)
    reference = np.percentile(m["sgpo"] - np.maximum.reduce([m["grpo"], m["sft"], m["luffy"]]), [2.5, 97.5])
    assert tie["primary"]["ci95"] == pytest.approx(list(reference))
    fixed = np.percentile(m["sgpo"] - m[tie["primary"]["best"]], [2.5, 97.5])
    assert reference[1] < fixed[1]  # choosing the best in every resample costs: the interval is lower


def test_secondary_endpoints_are_holm_corrected_and_judge_claims_2_to_5():
    rng = np.random.default_rng(1)
    flip = lambda p: (rng.random((3, 300)) < p).astype(float)  # noqa: E731
    test = {"grpo": flip(0.5), "sft": flip(0.5), "luffy": flip(0.5), "sgpo": flip(0.7), "sgpo_imitation": flip(0.7),
            "sgpo_constant_weight": flip(0.5), "sgpo_mismatched": flip(0.5)}  # fmt: skip
    gen = {"sgpo": flip(0.6), "sft": flip(0.3), "sgpo_imitation": flip(0.8)}
    out = claims.analyse({"base/test": test, "base/generalisation": gen}, samples=500)
    sec = out["secondary"]
    assert all(e["p_holm"] >= e["p"] for e in sec.values())
    assert sec["sgpo - grpo"]["verdict"] == "shown" and sec["sgpo - sgpo_imitation"]["verdict"] == "not shown"
    assert sec["sgpo - sgpo_imitation (generalisation)"]["verdict"] == "refuted"
    assert "sgpo - best baseline (larger)" not in sec  # no larger size run
    verdicts = {c: v["verdict"] for c, v in out["claims"].items()}
    assert verdicts == {1: "shown", 2: "not shown", 3: "shown", 4: "not tested", 5: "refuted"}
    table = "\n".join(claims.format_claims(out))
    assert "| (4) strategy distillation scales" in table and "**not tested**" in table


def test_verdicts_of_takes_the_chosen_rate_every_seed_and_joins_the_generalisation_splits():
    def run(m, lr, s, test, novel=None, longer=None):
        r = {"method": m, "learning_rate": lr, "seed": s, "test": {"correct": {"auto": test}}}
        if novel is not None:
            r.update(novel={"correct": {"auto": novel}}, longer={"correct": {"auto": longer}})
        return r

    runs = [run("sgpo", 1e-4, s, [s, 1.0], [0.5], [0.25]) for s in range(2)] + [run("sgpo", 3e-5, 0, [9, 9])]
    runs += [run("grpo", 1e-4, 0, [0.0, 0.0])]  # a seed missing: left out
    got = claims.verdicts_of(runs, {"sgpo": 1e-4, "grpo": 1e-4}, seeds=2, split="test")
    assert list(got) == ["sgpo"] and got["sgpo"].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    gen = claims.verdicts_of(runs, {"sgpo": 1e-4}, seeds=2, split="generalisation")
    assert gen["sgpo"].tolist() == [[0.5, 0.25], [0.5, 0.25]]
