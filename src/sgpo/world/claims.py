"""The pre-registered analysis of `sgpo experiment` (experiments/preregistration.md, docs/results.md):
the paper's five claims, each judged *shown*, *not shown* or *refuted* from the runs' per-problem test
verdicts.

Every endpoint is a difference of held-out autonomous pass@1 (the mean over seeds and problems of
each problem's pass rate), estimated by one paired bootstrap shared by all methods: each resample
draws S seeds and P problems with replacement, the same draw for every method, so any difference
and any maximum over methods is computed on one resample (`resample_means`).

- Primary endpoint (claim 1): SGPO minus the best of GRPO, SFT and LUFFY at the base size, the best
  re-chosen in every resample (so the interval pays for choosing it); its two-sided 95 % interval
  decides alone: shown when it lies above 0, refuted when below, not shown otherwise.
- Secondary endpoints (claims 2–5, and the content control): each a two-sided bootstrap test
  (`bootstrap_p`), Holm-corrected over the family `SECONDARY` (`holm`); shown when the difference is
  positive with adjusted p < 0.05, refuted when negative with adjusted p < 0.05.

A claim whose methods or splits were not run is *not tested*, never shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ALPHA = 0.05
BASELINES = ("grpo", "sft", "luffy")  # claim 1's comparators; the primary endpoint takes their best
# name: (claim, the compared method, the split, the model size); every one is SGPO − the method
SECONDARY: dict[str, tuple[int, str, str, str]] = {
    "sgpo - grpo": (1, "grpo", "test", "base"),
    "sgpo - sft": (1, "sft", "test", "base"),
    "sgpo - luffy": (1, "luffy", "test", "base"),
    "sgpo - sgpo_mismatched": (1, "sgpo_mismatched", "test", "base"),
    "sgpo - sgpo_imitation": (2, "sgpo_imitation", "test", "base"),
    "sgpo - sgpo_constant_weight": (3, "sgpo_constant_weight", "test", "base"),
    "sgpo - best baseline (larger)": (4, "best", "test", "larger"),
    "sgpo - sft (generalisation)": (5, "sft", "generalisation", "base"),
    "sgpo - sgpo_imitation (generalisation)": (5, "sgpo_imitation", "generalisation", "base"),
}
CLAIMS = {
    1: "SGPO beats SFT, GRPO and LUFFY",
    2: "the forward KL is selective and beats trajectory imitation",
    3: "the adaptive weight helps (against a constant weight)",
    4: "strategy distillation scales with the base model (the larger size)",
    5: "strategies generalise to novel problems better than trajectory imitation (SFT, the imitation ablation)",
}


def resample_means(verdicts: Mapping[str, np.ndarray], samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """{method: (samples,) mean of its (S, P) verdicts over each paired resample} — the same S seeds
    and P problems drawn for every method in a resample; every method must have the same (S, P)."""
    shapes = {np.shape(v) for v in verdicts.values()}
    if len(shapes) != 1:
        raise ValueError(f"every method needs the same (seeds, problems) verdicts, got {sorted(shapes)}")
    (S, P) = shapes.pop()
    rng = np.random.default_rng(seed)
    out = {m: np.empty(samples) for m in verdicts}
    arrays = {m: np.asarray(v, dtype=np.float64) for m, v in verdicts.items()}
    for i in range(samples):
        rows, cols = rng.integers(S, size=S), rng.integers(P, size=P)
        for m, v in arrays.items():
            out[m][i] = v[rows][:, cols].mean()
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean of `a - b` and its 95 % percentile interval from `resample_means`: `a`, `b` are (S, P)
    per-seed, per-problem verdicts of two methods, paired by seed and by problem."""
    means = resample_means({"a": a, "b": b}, samples, seed)
    low, high = np.percentile(means["a"] - means["b"], [2.5, 97.5])
    diff = float(np.mean(np.asarray(a, dtype=np.float64)) - np.mean(np.asarray(b, dtype=np.float64)))
    return {"mean_difference": diff, "ci95": [float(low), float(high)], "samples": samples}


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference being 0: twice the smaller share of resampled
    differences on either side of 0, with the +1 correction (never exactly 0), at most 1."""
    d = np.asarray(differences)
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return min(1.0, 2.0 * (tail + 1) / (len(d) + 1))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values: the i-th smallest of m times (m − i + 1), made monotone."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, out = len(order), 0.0, {}
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[k]))
        out[k] = running
    return out


def verdict(difference: float, p: float) -> str:
    if p < ALPHA:
        return "shown" if difference > 0 else "refuted"
    return "not shown"


def endpoint(a: np.ndarray, b: np.ndarray, full_a: float, full_b: float) -> dict[str, Any]:
    """SGPO − method from the resampled means `a`, `b` and the means on the full data."""
    d = a - b
    low, high = np.percentile(d, [2.5, 97.5])
    return {"difference": full_a - full_b, "ci95": [float(low), float(high)], "p": bootstrap_p(d)}


def analyse(verdicts: Mapping[str, Mapping[str, np.ndarray]], samples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The claims from per-problem verdicts: `verdicts[f"{size}/{split}"][method]` = (seeds,
    problems) pass rates, for size "base" / "larger" and split "test" / "generalisation" (the novel
    and longer problems together). Returns {"primary", "secondary", "claims"} (module doc)."""
    out: dict[str, Any] = {"alpha": ALPHA, "samples": samples, "secondary": {}}
    means = {key: resample_means(v, samples, seed) for key, v in verdicts.items() if "sgpo" in v}
    full = {key: {m: float(np.mean(x)) for m, x in v.items()} for key, v in verdicts.items()}

    def best(key: str) -> tuple[np.ndarray, float, str] | None:
        present = [m for m in BASELINES if m in means.get(key, {})]
        if not present:
            return None
        top = max(present, key=lambda m: full[key][m])
        return np.max([means[key][m] for m in present], axis=0), full[key][top], top

    key = "base/test"
    top = best(key) if key in means and set(BASELINES) <= set(means[key]) else None
    if top is not None:
        out["primary"] = {**endpoint(means[key]["sgpo"], top[0], full[key]["sgpo"], top[1]), "best": top[2]}
        low, high = out["primary"]["ci95"]
        out["primary"]["verdict"] = "shown" if low > 0 else "refuted" if high < 0 else "not shown"
    raw = {}
    for name, (_, method, split, size) in SECONDARY.items():
        key = f"{size}/{split}"
        if key not in means:
            continue
        if method == "best":
            top = best(key)
            if top is None:
                continue
            out["secondary"][name] = {**endpoint(means[key]["sgpo"], top[0], full[key]["sgpo"], top[1]), "best": top[2]}
        elif method in means[key]:
            out["secondary"][name] = endpoint(means[key]["sgpo"], means[key][method], full[key]["sgpo"], full[key][method])
        else:
            continue
        raw[name] = out["secondary"][name]["p"]
    for name, p in holm(raw).items():
        e = out["secondary"][name]
        e["p_holm"] = p
        e["verdict"] = verdict(e["difference"], p)
    out["claims"] = claim_verdicts(out)
    return out


def claim_verdicts(analysis: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """{claim: {"text", "verdict", "endpoints"}}: claim 1 by the primary endpoint; claims 2–5 by their
    secondary endpoints — shown when every one is shown, refuted when any is refuted, else not shown;
    not tested without any."""
    out: dict[int, dict[str, Any]] = {}
    for claim, text in CLAIMS.items():
        if claim == 1:
            primary = analysis.get("primary")
            names = ["primary"] if primary else []
            verdicts = [primary["verdict"]] if primary else []
        else:
            names = [n for n, spec in SECONDARY.items() if spec[0] == claim and n in analysis["secondary"]]
            verdicts = [analysis["secondary"][n]["verdict"] for n in names]
        if not verdicts:
            v = "not tested"
        elif "refuted" in verdicts:
            v = "refuted"
        elif all(x == "shown" for x in verdicts):
            v = "shown"
        else:
            v = "not shown"
        out[claim] = {"text": text, "verdict": v, "endpoints": names}
    return out


def verdicts_of(runs: Sequence[Mapping[str, Any]], chosen: Mapping[str, float], seeds: int, split: str) -> dict[str, np.ndarray]:
    """{method: (seeds, problems) autonomous pass rates} of each method's runs at its chosen rate, on
    `split` ("test", or "generalisation": the novel and longer problems one after the other); a
    method missing a seed or the split is left out."""
    out = {}
    for m, lr in chosen.items():
        fin = sorted((r for r in runs if r["method"] == m and r["learning_rate"] == lr), key=lambda r: r["seed"])
        if [r["seed"] for r in fin] != list(range(seeds)):
            continue
        parts = ("test",) if split == "test" else ("novel", "longer")
        if not all(p in r for r in fin for p in parts):
            continue
        out[m] = np.array([sum((list(r[p]["correct"]["auto"]) for p in parts), []) for r in fin], dtype=np.float64)
    return out


def format_claims(analysis: Mapping[str, Any]) -> list[str]:
    """results.md's verdict table: one row per claim, then every endpoint."""

    def ci(e: Mapping[str, Any]) -> str:
        return f"{e['difference']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]"

    lines = ["", "The paper's claims (pre-registered analysis, `sgpo.world.claims`):", "",
             "| claim | verdict | endpoints |", "| --- | --- | --- |"]  # fmt: skip
    for claim, c in analysis["claims"].items():
        lines.append(f"| ({claim}) {c['text']} | **{c['verdict']}** | {', '.join(c['endpoints']) or '—'} |")
    lines += ["", "| endpoint | SGPO − method [95% CI] | p | p (Holm) | verdict |", "| --- | ---: | ---: | ---: | --- |"]
    if "primary" in analysis:
        e = analysis["primary"]
        lines.append(
            f"| primary: sgpo - best of {'/'.join(BASELINES)} ({e['best']}) | {ci(e)} | {e['p']:.3f} | — | {e['verdict']} |"
        )
    for name, e in analysis["secondary"].items():
        label = name + (f" ({e['best']})" if "best" in e else "")
        lines.append(f"| {label} | {ci(e)} | {e['p']:.3f} | {e['p_holm']:.3f} | {e['verdict']} |")
    return lines
