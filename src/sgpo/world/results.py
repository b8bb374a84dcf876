"""The demo's comparison, from the pipeline's held-out evaluations (`eval/<model>.json`) and the two
runs' metrics: a plain-text table, `results.json`, `per_family.json`, `plots/*.png` and an HTML
report per training run.

`results.json` holds `{"methods": {model: {"heldout_auto", "heldout_guided"[, "heldout_auto_greedy"]}},
"wall_seconds", "seed", "metric"}` (models: warmup, grpo, sgpo; `heldout_auto` is the primary metric,
pass@1 over the samples of `metric`, with the greedy accuracy beside it when that is sampled);
`per_family.json` holds `{"methods": {model: {family: {"auto", "guided"[, "greedy_auto"]}}}, "seed"}`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sgpo.data import write_json
from sgpo.evaluation.report import read_metrics, render_report

RESULTS_FILE = "results.json"
PER_FAMILY_FILE = "per_family.json"


def format_table(heldout: Mapping[str, Mapping[str, Any]]) -> str:
    """Held-out accuracy of each model (autonomous, then guided), per family and overall, as plain
    text; `heldout[model]` is `sgpo.world.evaluate.heldout_accuracy`'s output."""
    names = list(heldout)
    families = sorted({f for h in heldout.values() for f in h["per_family"]})

    def cells(pick) -> list[str]:
        return [f"{pick(heldout[n], mode):.3f}" for mode in ("auto", "guided") for n in names]

    rows = [["", *[f"{n} {mode}" for mode in ("auto", "guided") for n in names]]]
    rows += [[fam, *cells(lambda h, mode: h["per_family"].get(fam, {}).get(mode, float("nan")))] for fam in families]
    rows.append(["all", *cells(lambda h, mode: h[mode])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def headline(heldout: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """`results.json`'s `methods`: overall autonomous and guided accuracy of each model (and the greedy
    autonomous accuracy beside a sampled one)."""
    out = {}
    for name, h in heldout.items():
        out[name] = {"heldout_auto": round(h["auto"], 6), "heldout_guided": round(h["guided"], 6)}
        if "greedy_auto" in h:
            out[name]["heldout_auto_greedy"] = round(h["greedy_auto"], 6)
    return out


def write_results(out: Path, run: Mapping[str, Any], started: float) -> dict[str, Any]:
    """Plots, a report per training run, `per_family.json` and `results.json` (written last; its
    `wall_seconds` counts from `started`, a `time.perf_counter()` value). `run` is
    `sgpo.world.pipeline.run_pipeline`'s result so far; returns `results.json`'s content."""

    heldout = run["methods"]
    write_plots(out, headline(heldout), [m for m in heldout if m != "warmup"])
    for method in heldout:
        if method != "warmup":
            render_report(out / method)
    per_family = {
        m: {f: {k: r[k] for k in ("auto", "guided", "greedy_auto") if k in r} for f, r in h["per_family"].items()}
        for m, h in heldout.items()
    }
    write_json(out / PER_FAMILY_FILE, {"methods": per_family, "seed": run["seed"]})
    results = {
        "methods": headline(heldout),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "seed": run["seed"],
        "metric": run.get("metric", "greedy"),
    }
    write_json(out / RESULTS_FILE, results)
    return results


def write_plots(out: Path, methods: Mapping[str, Mapping[str, float]], runs: list[str]) -> list[Path]:
    """`plots/reward_curves.png` (training reward of `runs`) and `plots/heldout_accuracy.png`
    (`methods`: `headline`'s output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"grpo": "tab:gray", "sgpo": "tab:blue"}
    for method in runs:
        logs = [m for m in read_metrics(out / method / "metrics.jsonl")[0] if "reward/auto" in m]
        ax.plot(
            [m["step"] for m in logs],
            [m["reward/auto"] for m in logs],
            label=f"{method.upper()} autonomous",
            color=colours[method],
        )
        guided = [m for m in logs if "reward/guided" in m]
        if guided:
            ax.plot(
                [m["step"] for m in guided],
                [m["reward/guided"] for m in guided],
                label=f"{method.upper()} guided",
                color=colours[method],
                linestyle="--",
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean reward of the rollouts")
    ax.set_title("Training reward (strategy world)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    curves = folder / "reward_curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(methods)
    width = 0.38
    for j, key in enumerate(("heldout_auto", "heldout_guided")):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        vals = [methods[n][key] for n in names]
        bars = ax.bar(
            xs, vals, width, label="autonomous" if j == 0 else "guided (reference)", color=("tab:blue", "tab:orange")[j]
        )
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), [n.upper() if n != "warmup" else "warm-up" for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Held-out accuracy")
    ax.legend()
    fig.tight_layout()
    bars_png = folder / "heldout_accuracy.png"
    fig.savefig(bars_png, dpi=110)
    plt.close(fig)
    return [curves, bars_png]
