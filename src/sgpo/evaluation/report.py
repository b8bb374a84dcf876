"""The HTML report of a training run: the curves a researcher would otherwise rebuild in a notebook.

Reads `RUN_DIR/metrics.jsonl` (one JSON object per logged step, as `SGPOTrainer` writes it; missing
keys are fine — a GRPO run has no guided or distillation curves), the run's settings
`RUN_DIR/config.yaml` when present, and every evaluation `results.json` under RUN_DIR (`sgpo eval`
writes to `MODEL/eval/…` by default) of the weights there now (one of earlier weights — the folder was
retrained or re-saved since — is left out and counted in a warning), and writes `RUN_DIR/report/index.html` with one PNG per panel:
autonomous vs guided reward, their gap, the mean instance weight, the distillation KL, the fraction
of tokens masked by the proximal constraint, completion lengths, losses, clipping, and the eval
table (with a bar chart), and the settings by topic. Logged keys that no panel claims are plotted by
prefix under "Other metrics", so nothing logged is silently left out. Steps that go backwards in
metrics.jsonl (two runs written into one folder) are warned about, on the page and to the caller.

Curves with more than 30 points are drawn raw (thin) with a centred moving average over ~1/25 of the
run on top.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgpo.config_fields import grouped_fields
from sgpo.data import iter_jsonl
from sgpo.evaluation.suite import average, model_identity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Panel:
    """One figure: `series` are (metric key, label) pairs drawn solid; `dashed` ones dashed."""

    slug: str
    title: str
    ylabel: str
    series: tuple[tuple[str, str], ...]
    dashed: tuple[tuple[str, str], ...] = ()
    note: str = ""


PANELS: tuple[Panel, ...] = (
    Panel(
        "reward",
        "Reward: autonomous vs guided",
        "mean reward",
        (("reward/auto", "autonomous"), ("reward/guided", "guided")),
        (("accuracy/auto", "accuracy, autonomous"), ("accuracy/guided", "accuracy, guided")),
        "Rollouts without (autonomous) and with (guided) the strategy in the prompt.",
    ),
    Panel(
        "gap",
        "Guided − autonomous reward",
        "reward gap",
        (("reward/gap", "gap"),),
        note="What the strategy still adds; SGPO's job is to move it into the autonomous policy.",
    ),
    Panel(
        "instance_weight",
        "Mean instance weight",
        "w",
        (("distill/weight_mean", "mean w"),),
        note="The adaptive per-problem weight of the distillation term; it falls as the policy becomes competent alone.",
    ),
    Panel("distill_kl", "Distillation KL(teacher ‖ student)", "nats / token", (("distill/kl", "KL"),)),
    Panel("masked_fraction", "Tokens masked by the proximal constraint", "fraction", (("distill/masked_frac", "masked"),)),
    Panel(
        "completion_length",
        "Completion length",
        "tokens",
        (("completion_length/auto", "autonomous"), ("completion_length/guided", "guided")),
    ),
    Panel("loss", "Losses", "loss", (("loss", "total"), ("rl/loss", "RL term"), ("distill/loss", "distillation term"))),
    Panel("clip", "Clipped tokens (RL term)", "fraction", (("clip/low", "low"), ("clip/high", "high"))),
    Panel("learning_rate", "Learning rate", "lr", (("learning_rate", "lr"),)),
    Panel("throughput", "Throughput", "tokens / s", (("tokens_per_second", "tokens/s"),)),
)
_X_KEYS = ("step", "epoch")


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a metrics.jsonl and warnings about the lines skipped (invalid JSON — e.g. the last line
    of a run still being written — or not an object)."""

    rows, warnings = [], []
    for lineno, row, exc in iter_jsonl(path):
        if exc is not None:
            warnings.append(f"{path}: line {lineno}: skipped, invalid JSON ({exc.msg})")
        elif not isinstance(row, dict):
            warnings.append(f"{path}: line {lineno}: skipped, not a JSON object")
        else:
            rows.append(row)
    return rows, warnings


def step_warnings(rows: list[dict[str, Any]], name: str = "metrics.jsonl") -> list[str]:
    """One warning when `step` goes backwards somewhere in `rows`: the file mixes runs (a second run
    written into the same output folder, or a resume that did not cut the file), so its curves
    interleave them. Equal steps (the trainer's final summary row) are fine."""
    backwards = []
    prev: tuple[int, float] | None = None
    for i, row in enumerate(rows):
        step = row.get("step")
        if not _is_number(step):
            continue
        if prev is not None and step < prev[1]:
            backwards.append((i, step, prev))
        prev = (i, step)
    if not backwards:
        return []
    i, step, (j, before) = backwards[0]
    more = f" ({len(backwards)} places)" if len(backwards) > 1 else ""
    return [
        f"{name}: steps go backwards{more}, first at row {i + 1}: step {step:g} after step {before:g} (row {j + 1}). "
        "The file mixes several runs (e.g. a second run written into the same output folder); the curves "
        "below interleave them. Give each run its own --output_dir."
    ]


def read_settings(run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The run's settings from `run_dir/config.yaml` (the resolved training config, written by the
    trainer) and warnings; (None, []) when there is no such file."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None, []
    import yaml

    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return None, [f"{path}: not shown, not readable YAML ({str(exc).splitlines()[0]})"]
    if not isinstance(settings, dict):
        return None, [f"{path}: not shown, not a mapping of setting: value"]
    return settings, []


def _settings_html(settings: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)

    parts = ["<h2>Settings</h2><p>From <code>config.yaml</code>.</p>"]
    for title, _, names in grouped_fields([str(k) for k in settings], None):
        table = _html_table(["setting", "value"], [[n, show(settings[n])] for n in names], caption=html.escape(title))
        parts.append(
            f"<details><summary>{html.escape(title)} ({len(names)})</summary>{table}</details>"
            if title == "other settings"
            else table
        )
    return "\n".join(parts)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def series_of(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(x, y) of a metric over the rows that have a numeric value for it; x is `step` (or the row's
    position when the run logs no step)."""
    xs, ys, last_x = [], [], 0.0
    for i, row in enumerate(rows):
        x = row.get("step")
        last_x = float(x) if _is_number(x) else (last_x if "step" in rows[0] else float(i))
        v = row.get(key)
        if _is_number(v):
            xs.append(last_x)
            ys.append(float(v))
    return xs, ys


def moving_average(ys: list[float], window: int) -> list[float]:
    """Centred moving average, the window shrinking at the ends; NaNs are skipped."""
    out, half = [], window // 2
    for i in range(len(ys)):
        chunk = [y for y in ys[max(0, i - half) : i + half + 1] if not math.isnan(y)]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def _new_figure(width=6.0, height=3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def integer_steps(ax) -> None:
    """Ticks of the x axis at whole steps only (a few logged steps would otherwise show 1.5, 2.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def distinct_labels(values: list[float], least: int = 2, most: int = 6) -> list[str]:
    """`values` with the fewest decimals (at least `least`) that print values that differ differently
    (0.025 and 0.033: "0.025", "0.033", not "0.03" twice)."""
    for decimals in range(least, most + 1):
        labels = [f"{v:.{decimals}f}" for v in values]
        if len(set(labels)) == len(set(values)):  # equal values print alike by construction
            return labels
    return [f"{v:.{most}f}" for v in values]


def panel_figure(rows, title, ylabel, solid, dashed):
    """A figure of the series that have data (steps on the x axis, whole steps only), or None when no
    series has two points or more."""
    drawn = 0
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    solid_data = [series_of(rows, key) for key, _ in solid]
    # dashed series i shares the colour of solid series i (e.g. accuracy/auto with reward/auto)
    styled = [(s, "-", palette[i % 8]) for i, s in enumerate(solid)] + [(s, "--", palette[i % 8]) for i, s in enumerate(dashed)]
    for (key, label), style, color in styled:
        xs, ys = series_of(rows, key)
        if len(ys) < 2:
            continue
        if style == "--" and any(d == (xs, ys) for d in solid_data):
            continue  # identical to a solid curve (accuracy is the reward): drawing it would only hide that one
        if len(ys) > 30:
            ax.plot(xs, ys, style, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(xs, moving_average(ys, max(3, len(ys) // 25)), style, color=color, linewidth=1.8, label=label)
        else:
            ax.plot(xs, ys, style, color=color, linewidth=1.6, marker="o", markersize=2.5, label=label)
        drawn += 1
    if not drawn:
        return None
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    integer_steps(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _plot_panel(rows, title, ylabel, solid, dashed, out_path: Path) -> bool:
    """`panel_figure` saved to `out_path`; False (and no file) when it has no series."""
    fig = panel_figure(rows, title, ylabel, solid, dashed)
    if fig is None:
        return False
    fig.savefig(out_path)
    return True


def is_stale(doc: dict) -> bool:
    """An evaluation of a local model folder whose files changed since (`model_identity`: new weights,
    e.g. a retrained run): its figures are not of the model that is there now. Results without an
    identity, or of a hub model, are taken as current."""
    recorded = doc.get("model_identity")
    if not isinstance(recorded, dict) or "path" not in recorded:
        return False
    if not Path(recorded["path"]).exists():
        return True
    return json.loads(json.dumps(model_identity(recorded["path"]))) != recorded


def find_eval_results(run_dir: Path, exclude: Path) -> tuple[list[tuple[Path, dict]], list[Path]]:
    """Every `results.json` under `run_dir` written by `sgpo eval` (it has a `benchmarks` object) of the
    weights there now, and the paths of those left out because their model's files changed (`is_stale`)."""
    found, stale = [], []
    for path in sorted(run_dir.rglob("results.json")):
        if exclude in path.parents:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("%s: skipped (%s)", path, exc)
            continue
        if isinstance(doc, dict) and isinstance(doc.get("benchmarks"), dict) and doc["benchmarks"]:
            (stale.append(path) if is_stale(doc) else found.append((path, doc)))
    return found, stale


def _plot_eval(evals: list[tuple[str, dict]], out_path: Path) -> bool:
    names = []
    for _, doc in evals:
        names += [b for b in doc["benchmarks"] if b not in names]
    if not names:
        return False
    fig = _new_figure(width=max(5.0, 1.1 * len(names) + 2.5))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(evals)
    for j, (label, doc) in enumerate(evals):
        xs, ys, lo, hi = [], [], [], []
        for i, b in enumerate(names):
            e = doc["benchmarks"].get(b)
            if not e:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * e["accuracy"])
            lo.append(100 * (e["accuracy"] - e["ci95"][0]))
            hi.append(100 * (e["ci95"][1] - e["accuracy"]))
        ax.bar(xs, ys, width=width * 0.9, yerr=[lo, hi], capsize=3, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=9)
    ax.set_ylabel("accuracy (%) with 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title("Evaluation", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out_path)
    return True


def _eval_table(label: str, doc: dict) -> str:
    benches = doc["benchmarks"]
    k = max(int(e.get("k", 1)) for e in benches.values())
    js = sorted({j for e in benches.values() for j in e.get("pass_at_k", {}) if int(j) > 1}, key=int)
    head = ["benchmark", "n", f"avg@{k}" if k > 1 else "accuracy", "95% CI"] + [f"pass@{j}" for j in js]
    head += ["greedy", "timeouts", "mean tokens"]

    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    rows = []
    for name, e in benches.items():
        ci = e.get("ci95") or [None, None]
        cells = [name, e.get("n", "–"), pct(e.get("accuracy")), f"{pct(ci[0])}–{pct(ci[1])}"]
        cells += [pct(e.get("pass_at_k", {}).get(j)) for j in js]
        cells += [
            pct(e.get("greedy_accuracy")),
            e.get("num_timeouts", "–"),
            f"{e['mean_completion_tokens']:.0f}" if _is_number(e.get("mean_completion_tokens")) else "–",
        ]
        rows.append(cells)
    avg = doc.get("average") or average({b: e for b, e in benches.items() if "pass_at_k" in e and "accuracy" in e})
    if len(benches) > 1 and avg:
        rows.append(
            ["<b>average</b>", "", pct(avg.get("accuracy")), ""]
            + [pct(avg.get("pass_at_k", {}).get(j)) for j in js]
            + [pct(avg.get("greedy_accuracy")), "", ""]
        )
    settings = doc.get("settings", {})
    caption = f"{html.escape(label)} — model {html.escape(str(doc.get('model', '?')))}"
    caption += f", T={settings.get('temperature', '?')}, top-p={settings.get('top_p', '?')}, max new tokens={settings.get('max_new_tokens', '?')}"
    return _html_table(head, rows, caption, raw_first_col=True)


def _html_table(head, rows, caption="", raw_first_col=False) -> str:
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{caption}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            text = str(c) if (raw_first_col and i == 0 and str(c).startswith("<b>")) else html.escape(str(c))
            cells.append(f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    return f"{v:.4g}"


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1320px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 640px; } figure img { width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; } caption { text-align: left; font-weight: 600; padding: 4px 0; }
.warn { color: #a40; font-size: 0.85em; }
"""


def _plot_panels(rows: list[dict], out_dir: Path) -> tuple[list[tuple[str, str, str]], set[str]]:
    """The `PANELS` that have data, as PNGs in `out_dir`: ([(file, title, note)], the keys they show)."""
    figures: list[tuple[str, str, str]] = []  # (file, title, note)
    claimed = set(_X_KEYS)
    for panel in PANELS:
        solid = list(panel.series)
        # a gap that was not logged is derived from the two rewards when both were
        if panel.slug == "gap" and not series_of(rows, "reward/gap")[1]:
            derived = [
                dict(r, **{"reward/gap": r["reward/guided"] - r["reward/auto"]})
                for r in rows
                if _is_number(r.get("reward/guided")) and _is_number(r.get("reward/auto"))
            ]
            if _plot_panel(derived, panel.title + " (derived)", panel.ylabel, solid, (), out_dir / f"{panel.slug}.png"):
                figures.append((f"{panel.slug}.png", panel.title, panel.note))
        elif _plot_panel(rows, panel.title, panel.ylabel, solid, list(panel.dashed), out_dir / f"{panel.slug}.png"):
            figures.append((f"{panel.slug}.png", panel.title, panel.note))
        claimed.update(k for k, _ in panel.series + panel.dashed)
    return figures, claimed


def _plot_other(rows: list[dict], claimed: set[str], out_dir: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Everything else that was logged, grouped by prefix: ([(file, title, "")] of the series with two
    points or more, [(key, last value)] of the others)."""
    # anything else that was logged, grouped by prefix
    other: dict[str, list[str]] = {}
    for row in rows:
        for key, v in row.items():
            if key not in claimed and _is_number(v):
                group = other.setdefault(key.split("/")[0], [])
                if key not in group:
                    group.append(key)
    other_figs: list[tuple[str, str, str]] = []
    final_values: list[tuple[str, str]] = []
    for prefix, keys in other.items():
        plotted = [k for k in keys if len(series_of(rows, k)[1]) >= 2]
        final_values += [(k, _fmt(series_of(rows, k)[1][-1])) for k in keys if k not in plotted]
        for start in range(0, len(plotted), 6):
            chunk = plotted[start : start + 6]
            slug = "other_" + "".join(c if c.isalnum() else "_" for c in prefix) + (f"_{start // 6}" if start else "")
            if _plot_panel(rows, prefix, "value", [(k, k) for k in chunk], [], out_dir / f"{slug}.png"):
                other_figs.append((f"{slug}.png", prefix, ""))
    return other_figs, final_values


def _page(run_dir: Path, rows: list[dict], warnings: list[str], eval_labels: list[tuple[str, dict]],
          figures: list[tuple[str, str, str]], other_figs: list[tuple[str, str, str]],
          final_values: list[tuple[str, str]], settings: dict | None, eval_figure: str | None) -> str:  # fmt: skip
    """The report's HTML page: a training run's, or a model folder's (evaluations only)."""
    kind = "Training run" if rows else "Model"
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>sgpo report: {html.escape(run_dir.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{kind} <code>{html.escape(str(run_dir))}</code></h1>",
    ]
    for w in warnings[:20]:
        parts.append(f"<p class='warn'>{html.escape(w)}</p>")
    if rows:
        steps = series_of(rows, "step")[1]
        parts.append(f"<p>{len(rows)} logged rows" + (f", steps {steps[0]:.0f} to {steps[-1]:.0f}" if steps else "") + ".</p>")
    else:
        parts.append("<p class='warn'>No metrics.jsonl rows in this run folder; only evaluation results are shown.</p>")
    if eval_labels:
        parts.append("<h2>Evaluation</h2>")
        for label, doc in eval_labels:
            parts.append(_eval_table(label, doc))
        if eval_figure is not None:
            parts.append(
                f"<figure><img src='{eval_figure}' alt='Evaluation'><figcaption>avg@k per benchmark with its 95% "
                "interval</figcaption></figure>"
            )
    if figures:
        parts.append("<h2>Training curves</h2><div class='grid'>")
        for file, title, note in figures:
            parts.append(
                f"<figure><img src='{file}' alt='{html.escape(title)}'><figcaption>{html.escape(note)}</figcaption></figure>"
            )
        parts.append("</div>")
    summary_rows = []
    for panel in PANELS:
        for key, _ in panel.series + panel.dashed:
            _, ys = series_of(rows, key)
            if ys:
                finite = [y for y in ys if not math.isnan(y)] or [math.nan]
                summary_rows.append([key, _fmt(ys[0]), _fmt(ys[-1]), _fmt(min(finite)), _fmt(max(finite)), len(ys)])
    if summary_rows:
        parts.append("<h2>Summary</h2>")
        parts.append(_html_table(["metric", "first", "last", "min", "max", "points"], summary_rows))
    if other_figs or final_values:
        parts.append("<h2>Other metrics</h2>")
        if other_figs:
            parts.append(
                "<div class='grid'>"
                + "".join(f"<figure><img src='{f}' alt='{html.escape(t)}'></figure>" for f, t, _ in other_figs)
                + "</div>"
            )
        if final_values:
            parts.append(_html_table(["metric", "value"], final_values))
    if settings:
        parts.append(_settings_html(settings))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(
    run_dir: str | Path, out_dir: str | Path | None = None, on_warning: Callable[[str], None] | None = None
) -> Path:
    """Write the report of the run in `run_dir` (default folder `run_dir/report`); returns the path
    of `index.html`. Raises FileNotFoundError when the run has neither metrics nor eval results.
    Warnings (lines skipped, steps going backwards, an unreadable config.yaml) are shown on the page
    and passed to `on_warning`."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    metrics_path = run_dir / "metrics.jsonl"
    rows, warnings = read_metrics(metrics_path) if metrics_path.is_file() else ([], [])
    evals, stale = find_eval_results(run_dir, out_dir)
    if not rows and not evals:
        raise FileNotFoundError(f"{run_dir}: nothing to report: no metrics.jsonl with rows and no eval results.json")
    settings, settings_warnings = read_settings(run_dir)
    warnings = step_warnings(rows, str(metrics_path)) + settings_warnings + warnings
    if stale:
        names = ", ".join(str(p.parent.relative_to(run_dir)) for p in stale)
        warnings.append(
            f"left out {len(stale)} evaluation(s) of earlier weights (the model's files changed since they ran): {names}; "
            "evaluate the model again (sgpo eval)"
        )
    for w in warnings:
        if on_warning is not None:
            on_warning(w)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    figures, claimed = _plot_panels(rows, out_dir)
    other_figs, final_values = _plot_other(rows, claimed, out_dir)
    eval_labels = [(str(p.parent.relative_to(run_dir)) or ".", doc) for p, doc in evals]
    eval_figure = "eval.png" if eval_labels and _plot_eval(eval_labels, out_dir / "eval.png") else None
    index = out_dir / "index.html"
    page = _page(run_dir, rows, warnings, eval_labels, figures, other_figs, final_values, settings, eval_figure)
    index.write_text(page, encoding="utf-8")
    return index
