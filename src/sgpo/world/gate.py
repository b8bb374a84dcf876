"""The gate a strategy world must pass before it may judge SGPO: eleven criteria computed from the
warm-up and the baselines (GRPO, SFT) alone, never from an SGPO or LUFFY run (docs/results.md, "The
gate"). Each criterion is a pure function of the figures it needs and returns a `Criterion`; the
measurements that produce those figures from models and runs live in `sgpo.world.gate_measure`, the
driver in `sgpo.world.experiment` (`sgpo experiment --gate`).

| criterion | passes when |
| --- | --- |
| C1 headroom | ≥ 40% of training problems have an autonomous pass rate (k = 16, T = 1) in [0.1, 0.9]; ≤ 25% at 0; ≤ 15% at 1 |
| C2 signal | ≤ 5% of GRPO's optimizer steps have a zero gradient |
| C3 guidance | guided accuracy ≥ 0.7 in every family; guided − autonomous ≥ 0.2 in at least half of them |
| C4 teacher ≠ trajectory | on guided rollouts, teacher entropy on non-critical tokens ≥ 0.2 nats and Spearman(KL_t, NLL_t) ≤ 0.8 |
| C5 shortcuts | the majority answer scores ≤ 0.2 in every family; a wrong procedure is right by coincidence ≤ 5% |
| C6 positive controls | tuned GRPO and tuned SFT each beat the warm-up by ≥ 0.05 with a paired-bootstrap 95% CI excluding 0; every chosen lr inside the grid |
| C7 capacity | under tuned GRPO and SFT no family drops by more than 0.1 |
| C8 resolution | the 95% CI half-width of a paired difference between two methods ≤ 0.03 |
| C9 generalisation split | novel wordings and longer instances: warm-up autonomous accuracy in [0.05, 0.6], guided ≥ 0.5 |
| C10 scaling | two model sizes ≥ 2× apart in parameters each pass C1–C8 |
| C11 mechanisms on | every RL run takes ≥ 2 optimizer steps per generation batch (the clip and masked fractions reported) |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import spearmanr

# the thresholds of the table above
HEADROOM_BAND = (0.1, 0.9)
HEADROOM_MIN_MIDDLE, HEADROOM_MAX_ZERO, HEADROOM_MAX_ONE = 0.40, 0.25, 0.15
SIGNAL_MAX_ZERO_GRADIENT = 0.05
GUIDED_MIN, GAP_MIN = 0.7, 0.2
TEACHER_MIN_ENTROPY, TEACHER_MAX_SPEARMAN = 0.2, 0.8
MAJORITY_MAX, COINCIDENCE_MAX = 0.2, 0.05
CONTROL_MIN_GAIN = 0.05
CAPACITY_MAX_DROP = 0.1
RESOLUTION_MAX_HALF_WIDTH = 0.03
GENERALISATION_AUTO_BAND, GENERALISATION_GUIDED_MIN = (0.05, 0.6), 0.5
SCALING_MIN_RATIO = 2.0
MECHANISMS_MIN_STEPS = 2
PER_SIZE = ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8")  # what C10 asks of every size


@dataclass(frozen=True)
class Criterion:
    """One criterion's verdict: `name` (C1 … C11), its `figure` (the numbers it was judged on, as a
    short text) and whether it `passed`."""

    name: str
    title: str
    figure: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EPS = 1e-9  # thresholds are compared up to float round-off (0.7 − 0.5 is 0.19999999999999996)


def _ge(x: float, t: float) -> bool:
    return x >= t - EPS


def _le(x: float, t: float) -> bool:
    return x <= t + EPS


def _share(values: Sequence[float], test) -> float:
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


def headroom(pass_rates: Sequence[float]) -> Criterion:
    """C1, from the autonomous pass rate of every training problem (share of its k samples right)."""
    lo, hi = HEADROOM_BAND
    middle = _share(pass_rates, lambda r: _ge(r, lo) and _le(r, hi))
    zero, one = _share(pass_rates, lambda r: r == 0), _share(pass_rates, lambda r: r == 1)
    ok = bool(pass_rates) and _ge(middle, HEADROOM_MIN_MIDDLE) and _le(zero, HEADROOM_MAX_ZERO) and _le(one, HEADROOM_MAX_ONE)
    return Criterion(
        "C1", "headroom", f"in [{lo}, {hi}] {middle:.2f}, at 0 {zero:.2f}, at 1 {one:.2f} ({len(pass_rates)} problems)", ok
    )


def signal(zero_gradient_steps: int, steps: int) -> Criterion:
    """C2, from GRPO's runs: optimizer steps whose gradient was exactly zero, of all its steps."""
    share = zero_gradient_steps / steps if steps else 1.0
    return Criterion("C2", "signal", f"{zero_gradient_steps} of {steps} GRPO steps with a zero gradient ({share:.1%})",
                     steps > 0 and _le(share, SIGNAL_MAX_ZERO_GRADIENT))  # fmt: skip


def guidance(per_family: Mapping[str, Mapping[str, float]]) -> Criterion:
    """C3, from the warm-up's held-out accuracy per family (`{"auto", "guided"}` of each)."""
    low = {f: r["guided"] for f, r in per_family.items() if not _ge(r["guided"], GUIDED_MIN)}
    gapped = [f for f, r in per_family.items() if _ge(r["guided"] - r["auto"], GAP_MIN)]
    ok = bool(per_family) and not low and 2 * len(gapped) >= len(per_family)
    lowest = min(per_family.items(), key=lambda kv: kv[1]["guided"]) if per_family else ("-", {"guided": float("nan")})
    figure = (
        f"lowest guided {lowest[1]['guided']:.2f} ({lowest[0]}); gap ≥ {GAP_MIN} in {len(gapped)} of {len(per_family)} families"
    )
    return Criterion("C3", "guidance", figure, ok)


def teacher_not_trajectory(noncritical_entropy: Sequence[float], kl: Sequence[float], nll: Sequence[float]) -> Criterion:
    """C4, from guided rollouts scored token by token: the teacher's entropy H(q_t) on every
    non-critical token; KL(q_t ‖ p_t) and the imitation loss −log p_t(ỹ_t) on every token."""
    if len(kl) != len(nll):
        raise ValueError(f"{len(kl)} KL values but {len(nll)} NLL values")
    entropy = sum(noncritical_entropy) / len(noncritical_entropy) if noncritical_entropy else 0.0
    rho = float(spearmanr(kl, nll).statistic) if len(kl) > 2 else float("nan")
    ok = _ge(entropy, TEACHER_MIN_ENTROPY) and _le(rho, TEACHER_MAX_SPEARMAN)  # a NaN rho fails
    return Criterion(
        "C4", "teacher ≠ trajectory", f"non-critical teacher entropy {entropy:.3f} nats; Spearman(KL, NLL) {rho:.3f}", ok
    )


def shortcuts(majority_share: Mapping[str, float], coincidence: float) -> Criterion:
    """C5: per family, the share of problems whose answer is that family's most common answer; and the
    share of (problem, other family) pairs where the other family's procedure gives the right answer."""
    worst = max(majority_share.items(), key=lambda kv: kv[1]) if majority_share else ("-", 1.0)
    ok = bool(majority_share) and _le(worst[1], MAJORITY_MAX) and _le(coincidence, COINCIDENCE_MAX)
    return Criterion(
        "C5", "shortcuts", f"majority answer ≤ {worst[1]:.3f} ({worst[0]}); wrong procedure right {coincidence:.3f}", ok
    )


def positive_controls(
    gains: Mapping[str, tuple[float, float, float]], chosen: Mapping[str, float], grid: Sequence[float]
) -> Criterion:
    """C6: `gains[method]` = (mean, CI low, CI high) of method − warm-up on held-out accuracy (paired
    bootstrap over problems × seeds), for GRPO and SFT; `chosen[method]` its tuned learning rate."""
    edge = {m: lr for m, lr in chosen.items() if len(grid) < 3 or lr in (min(grid), max(grid))}
    beat = {m: _ge(g[0], CONTROL_MIN_GAIN) and g[1] > 0 for m, g in gains.items()}
    ok = bool(gains) and all(beat.values()) and not edge
    parts = [f"{m} {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}] at lr {chosen.get(m, float('nan')):g}" for m, g in gains.items()]
    if edge:
        parts.append(f"lr on the grid's edge: {', '.join(sorted(edge))}")
    return Criterion("C6", "positive controls", "; ".join(parts), ok)


def capacity(per_family_change: Mapping[str, Mapping[str, float]]) -> Criterion:
    """C7: `per_family_change[method][family]` = method − warm-up held-out accuracy in that family."""
    drops = [(m, f, d) for m, fams in per_family_change.items() for f, d in fams.items()]
    worst = min(drops, key=lambda t: t[2]) if drops else ("-", "-", 0.0)
    ok = bool(drops) and _ge(worst[2], -CAPACITY_MAX_DROP)
    return Criterion("C7", "capacity", f"largest drop {worst[2]:+.3f} ({worst[0]}, {worst[1]})", ok)


def resolution(half_width: float) -> Criterion:
    """C8: the half-width of the 95% paired-bootstrap interval of one method minus another."""
    return Criterion("C8", "resolution", f"CI half-width {half_width:.3f}", _le(half_width, RESOLUTION_MAX_HALF_WIDTH))


def generalisation(splits: Mapping[str, Mapping[str, float]]) -> Criterion:
    """C9: the warm-up's `{"auto", "guided"}` accuracy on each generalisation split (novel, longer)."""
    lo, hi = GENERALISATION_AUTO_BAND
    ok = bool(splits) and all(
        _ge(r["auto"], lo) and _le(r["auto"], hi) and _ge(r["guided"], GENERALISATION_GUIDED_MIN) for r in splits.values()
    )
    figure = "; ".join(f"{s}: auto {r['auto']:.2f}, guided {r['guided']:.2f}" for s, r in splits.items())
    return Criterion("C9", "generalisation split", figure or "no generalisation split", ok)


def scaling(sizes: Mapping[str, tuple[int, Sequence[Criterion]]]) -> Criterion:
    """C10: `sizes[name]` = (parameters, the size's criteria); the two extreme sizes must be ≥ 2×
    apart and every size must pass C1–C8."""
    if len(sizes) < 2:
        return Criterion("C10", "scaling", f"{len(sizes)} model size(s); two are needed", False)
    params = sorted(p for p, _ in sizes.values())
    ratio = params[-1] / params[0]
    failed = {name: [c.name for c in crit if c.name in PER_SIZE and not c.passed] for name, (_, crit) in sizes.items()}
    ok = _ge(ratio, SCALING_MIN_RATIO) and not any(failed.values())
    detail = ", ".join(
        f"{n} ({p / 1e6:.2f} M): {'C1–C8 pass' if not failed[n] else 'fails ' + ' '.join(failed[n])}"
        for n, (p, _) in sizes.items()
    )
    return Criterion("C10", "scaling", f"{ratio:.1f}× apart; {detail}", ok)


def mechanisms(steps_per_batch: Mapping[str, int], clip_fraction: float | None, masked_fraction: float | None) -> Criterion:
    """C11: each RL method's optimizer steps per generation batch (`num_iterations` ×
    `steps_per_generation` / gradient accumulation), with the mean clip fraction of the GRPO runs and
    masked fraction of the SGPO runs (None: not measured, e.g. before any SGPO run)."""
    few = {m: n for m, n in steps_per_batch.items() if n < MECHANISMS_MIN_STEPS}
    fmt = lambda v: "not measured" if v is None else f"{v:.3f}"  # noqa: E731
    figure = f"steps per generation batch {dict(steps_per_batch)}; clip fraction {fmt(clip_fraction)}; masked fraction {fmt(masked_fraction)}"
    return Criterion("C11", "mechanisms on", figure, bool(steps_per_batch) and not few)


def format_table(criteria: Sequence[Criterion]) -> str:
    """The criteria as a Markdown table (criterion, figure, pass/fail)."""
    lines = ["| criterion | figure | verdict |", "| --- | --- | --- |"]
    lines += [f"| {c.name} {c.title} | {c.figure} | {'pass' if c.passed else 'FAIL'} |" for c in criteria]
    return "\n".join(lines)
