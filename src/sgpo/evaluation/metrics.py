"""Benchmark metrics from per-sample verdicts: avg@k, unbiased pass@k, and a 95% interval.

Input everywhere: `per_problem`, one list of k booleans (the verdicts of a problem's k samples) per
problem. All problems of a benchmark have the same k.

- avg@k: the mean of all n·k verdicts (the mean over problems of each problem's accuracy). With
  k = 1 and greedy decoding it is the greedy accuracy.
- pass@j (j ≤ k): the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models
  Trained on Code"): per problem with c correct out of k samples, 1 − C(k−c, j) / C(k, j), averaged
  over problems.
- 95% interval of avg@k: the Wilson score interval. With k = 1 over the n problems. With k > 1 the
  samples of one problem are correlated, so the interval uses Kish's effective sample size
  n_eff = p(1−p) / SE², where SE is the standard error of the mean of the per-problem accuracies
  (problems are the independent unit), kept within [n, n·k] (design effect between 1 and k); when
  every sample agrees (p = 0 or 1) there is nothing to estimate it from and n_eff = n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `c` correct among `n` samples: 1 − C(n−c, k)/C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    # C(n−c, k)/C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i), a product of numbers in (0, 1]: no overflow
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def wilson_interval(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion `p` observed on `n` (possibly effective) trials."""
    if n <= 0:
        return (0.0, 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    lo = 0.0 if p <= 0 else max(0.0, center - half)
    hi = 1.0 if p >= 1 else min(1.0, center + half)
    return (lo, hi)


def _check_shape(per_problem: Sequence[Sequence[bool]]) -> int:
    if not per_problem:
        raise ValueError("no problems to score")
    k = len(per_problem[0])
    if k == 0 or any(len(s) != k for s in per_problem):
        raise ValueError("every problem needs the same number k >= 1 of samples")
    return k


def avg_at_k(per_problem: Sequence[Sequence[bool]]) -> float:
    """Mean accuracy over all samples of all problems."""
    k = _check_shape(per_problem)
    return sum(sum(map(bool, s)) for s in per_problem) / (len(per_problem) * k)


def mean_pass_at_k(per_problem: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems (each problem has n >= k samples)."""
    n = _check_shape(per_problem)
    return sum(pass_at_k(n, sum(map(bool, s)), k) for s in per_problem) / len(per_problem)


def pass_k_values(k: int) -> list[int]:
    """The j reported as pass@j for k samples: 1, 2, 4, ... below k, and k itself."""
    out, j = [], 1
    while j < k:
        out.append(j)
        j *= 2
    return out + [k]


def interval95(per_problem: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """95% interval of avg@k (see the module docstring)."""
    k = _check_shape(per_problem)
    n = len(per_problem)
    p = avg_at_k(per_problem)
    if k == 1:
        return wilson_interval(p, n)
    acc = [sum(map(bool, s)) / k for s in per_problem]
    var = sum((a - p) ** 2 for a in acc) / (n - 1) if n > 1 else 0.0
    se2 = var / n
    if 0 < p < 1:
        n_eff = min(max(p * (1 - p) / se2, n), n * k) if se2 > 0 else n * k
    else:
        n_eff = n  # all samples agree: nothing to estimate the correlation from; count problems (cautious)
    return wilson_interval(p, n_eff)


def summarize(per_problem: Sequence[Sequence[bool]]) -> dict:
    """avg@k, pass@j for j in `pass_k_values(k)`, the 95% interval, n and k."""
    k = _check_shape(per_problem)
    lo, hi = interval95(per_problem)
    return {
        "n": len(per_problem),
        "k": k,
        "accuracy": avg_at_k(per_problem),
        "pass_at_k": {j: mean_pass_at_k(per_problem, j) for j in pass_k_values(k)},
        "ci95": (lo, hi),
    }
