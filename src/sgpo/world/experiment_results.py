"""What `sgpo experiment` reports, from its runs (`sgpo.world.experiment`): results.json, results.md,
plots/*.png.

results.json:

    {"methods": {method: {"label", "chosen_learning_rate", "validation_auto": {lr: mean over the tuning seeds},
                          "test_auto": {"per_seed": [...], "mean", "std"}, "test_guided": {...},
                          "per_family_auto": {family: mean over seeds}, "generated_tokens_per_run",
                          "train_seconds_per_run", "zero_gradient_steps_per_run"}},
     "comparisons": {method: {"reference", "mean_difference", "ci95": [low, high], "samples"}},
                   (reference − method; the reference: the config's `compare`, by default "sgpo")
     "tuning_per_family": {method: {lr: {family: test autonomous accuracy of the seed-0 run}}} (the runs
         evaluated on the test split: since tuning runs are evaluated on validation only, the chosen rate's),
     "warmup": {"test_auto", "test_guided", "per_family_auto"},
     "selectivity": {...}, "instance_weight": {...},
     "claims": the pre-registered analysis (`sgpo.world.claims.analyse`: the primary endpoint, the
               Holm-corrected secondary ones, each claim shown / not shown / refuted / not tested),
     "learning_rates", "seeds", "tuning_seeds", "shared_warmup": true, "setup": {...},
     "wall_seconds": {phase: seconds, "total": seconds},   (of the call that wrote it: a resumed call
                                                           counts only the work it did)
     "run_seconds_sum": training + evaluation seconds of every run, whichever call ran it, both sizes
     "run_seconds_by_size": {"base", "larger": that sum per model size},
     "larger": {"methods", "comparisons", "tuning_per_family", "warmup", "test_problems", "validation_problems"} of the larger
               model size (its `larger_methods`), when the config has one}

std is the sample standard deviation over seeds (n - 1). The bootstrap interval of SGPO minus a
method resamples seeds and problems (both with replacement, independently; seed s of one method is
paired with seed s of the other, problem with problem) and takes the 2.5 and 97.5 percentiles of the
mean difference in test autonomous accuracy.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgpo.data import read_rows, write_json
from sgpo.evaluation.report import read_metrics
from sgpo.evaluation.selectivity import build_trajectories, critical_share, score_trajectories, summarize, top_mass_shares
from sgpo.world.claims import analyse, format_claims, paired_bootstrap, verdicts_of
from sgpo.world.methods import METHODS, run_dir, setup_dir
from sgpo.world.model import load_model
from sgpo.world.prompt import WORLD_PROMPT_FORMAT
from sgpo.world.results import RESULTS_FILE

TABLE_FILE = "results.md"
SELECTIVITY_FILE = "selectivity.json"
SELECTIVITY_METHODS = ("sgpo", "sgpo_imitation")  # the runs (seed 0, base size) whose selectivity is measured beside the warm-up


# -- pure statistics ---------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"per_seed", "mean", "std"} (std: sample standard deviation, 0 for a single value)."""
    vals = [float(v) for v in values]
    return {"per_seed": vals, "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def rate_means(runs: Sequence[Mapping[str, Any]]) -> dict[float, float]:
    """{learning rate: mean validation autonomous accuracy of its runs}: what a rate is chosen on
    (`sgpo.world.experiment.choose_rate`, over the tuning runs) and what results report for it."""
    by_rate: dict[float, list[float]] = {}
    for r in runs:
        by_rate.setdefault(r["learning_rate"], []).append(r["validation"]["auto"])
    return {lr: statistics.fmean(v) for lr, v in by_rate.items()}


def tuning_means(runs: Sequence[Mapping[str, Any]], tuning_seeds: int) -> dict[str, float]:
    """{rate as written in results: mean validation accuracy of its tuning runs (seeds below `tuning_seeds`)}."""
    return {f"{lr:g}": v for lr, v in rate_means([r for r in runs if r["seed"] < tuning_seeds]).items()}


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # a constant series
        return None


# -- selectivity -----------------------------------------------------------------------------------
def selectivity(out: Path, exp, chosen: Mapping[str, float]) -> dict[str, Any]:
    """Where each distillation signal puts its mass on the oracle responses of the first
    `exp.selectivity_rows` validation records: the share of the forward KL(teacher ‖ student) mass
    (SGPO's term) and of the imitation NLL mass (−log π(ỹ_t | x), the imitation ablation's per-token
    loss) on the strategy-critical tokens, against their share of the tokens (`sgpo.evaluation.
    selectivity`, as `sgpo selectivity`). Measured on the warm-up (where every run starts) and on
    the seed-0 runs of SGPO and of the imitation ablation. Kept in selectivity.json."""
    path = out / SELECTIVITY_FILE
    if path.exists():
        return json.loads(path.read_text())
    rows = read_rows(out / "setup" / "world" / "validation.jsonl")[: exp.selectivity_rows]
    models = {"warmup": out / "setup" / "warmup"}
    models.update({m: run_dir(out, m, chosen[m], 0) for m in SELECTIVITY_METHODS if m in chosen})
    result: dict[str, Any] = {"rows": len(rows), "trajectories": "oracle responses of the validation records"}
    for name, folder in models.items():
        model, tokenizer = load_model(folder)
        trajs = build_trajectories(model, tokenizer, rows, prompt_format=WORLD_PROMPT_FORMAT, source_name="validation")
        score_trajectories(model, tokenizer, trajs, prompt_format=WORLD_PROMPT_FORMAT, temperature=exp.setup.train.temperature)
        summary = summarize(trajs)
        nll = [-v for t in trajs for v in t.student_logp]
        critical = [c for t in trajs for c in t.critical]
        result[name] = {
            "tokens": summary["tokens"],
            "forward_kl": {
                **summary["critical"],
                "top_mass_share": summary["top_mass_share"],
                "mean_per_token": summary["kl_mean_per_token"],
            },
            "imitation_nll": {
                **critical_share(nll, critical),
                "top_mass_share": top_mass_shares(nll),
                "mean_per_token": sum(nll) / len(nll) if nll else None,
            },
        }
        for v in (result[name]["forward_kl"], result[name]["imitation_nll"]):
            v["mass_share"] = v.pop("kl_mass_share")
    write_json(path, result)
    return result


# -- aggregation -----------------------------------------------------------------------------------
def warmup_summary(out: Path, size: str) -> dict[str, Any]:
    """results.json's `warmup` (or `larger.warmup`): the test accuracy of a size's shared warm-up."""
    warm = json.loads((setup_dir(out, size) / "eval" / "warmup.json").read_text())
    return {
        "test_auto": warm["auto"],
        "test_guided": warm["guided"],
        "per_family_auto": {f: v["auto"] for f, v in warm["per_family"].items()},
        "per_family_guided": {f: v["guided"] for f, v in warm["per_family"].items()},
    }


def instance_weight_series(folders: Sequence[Path]) -> dict[str, Any]:
    """Mean instance weight and autonomous accuracy of the rollouts per optimizer step (means over
    the runs in `folders`, from their metrics.jsonl), every (weight, accuracy) pair of a (run, step),
    and their correlation over those pairs."""
    per_run = []
    for f in folders:
        logs = [r for r in read_metrics(f / "metrics.jsonl")[0] if "distill/weight_mean" in r and "accuracy/auto" in r]
        per_run.append({int(r["step"]): (r["distill/weight_mean"], r["accuracy/auto"]) for r in logs})
    steps = sorted(set.intersection(*(set(r) for r in per_run))) if per_run else []
    weight = [statistics.fmean(r[s][0] for r in per_run) for s in steps]
    acc = [statistics.fmean(r[s][1] for r in per_run) for s in steps]
    pairs = [v for r in per_run for v in r.values()]
    return {
        "steps": steps,
        "weight_mean": weight,
        "accuracy_auto": acc,
        "runs": len(per_run),
        "pairs": [list(v) for v in pairs],
        "correlation": pearson([w for w, _ in pairs], [a for _, a in pairs]),
    }


def summarize_runs(
    exp, runs: Sequence[Mapping[str, Any]], chosen: Mapping[str, float], methods: Sequence[str] | None = None
) -> dict[str, Any]:
    """results.json's `methods`, `comparisons` and `tuning_per_family` from the runs' run.json (of
    `methods`, default `exp.methods`; the comparisons whose both methods are among them)."""
    names = list(exp.methods if methods is None else methods)

    def final(m: str) -> list[Mapping[str, Any]]:
        got = sorted((r for r in runs if r["method"] == m and r["learning_rate"] == chosen[m]), key=lambda r: r["seed"])
        assert [r["seed"] for r in got] == list(range(exp.seeds)), (m, [r["seed"] for r in got])
        return got

    methods, verdicts = {}, {}
    for m in names:
        fin = final(m)
        families = list(fin[0]["test"]["per_family"])
        methods[m] = {
            "label": METHODS[m].label,
            "chosen_learning_rate": chosen[m],
            "validation_auto": tuning_means([r for r in runs if r["method"] == m], exp.tuning_seeds),
            "test_auto": mean_std([r["test"]["auto"] for r in fin]),
            "test_guided": mean_std([r["test"]["guided"] for r in fin]),
            "per_family_auto": {f: statistics.fmean(r["test"]["per_family"][f]["auto"] for r in fin) for f in families},
            "per_family_guided": {f: statistics.fmean(r["test"]["per_family"][f]["guided"] for r in fin) for f in families},
            "generated_tokens_per_run": statistics.fmean(r["generated_tokens"] for r in fin),
            "train_seconds_per_run": statistics.fmean(r["wall_seconds"]["train"] for r in fin),
            "zero_gradient_steps_per_run": statistics.fmean(r["zero_gradient_steps"] for r in fin),
            "steps": fin[0]["steps"],
        }
        for split in ("novel", "longer", "test_greedy"):  # the generalisation splits; greedy beside sampled
            for mode in ("auto", "guided"):
                if split in fin[0] and mode in fin[0][split]:
                    methods[m][f"{split}_{mode}"] = mean_std([r[split][mode] for r in fin])
        for key in ("clip_fraction", "masked_fraction"):
            vals = [r[key] for r in fin if r.get(key) is not None]
            if vals:
                methods[m][key] = statistics.fmean(vals)
        verdicts[m] = np.array([r["test"]["correct"]["auto"] for r in fin], dtype=np.float64)
    comparisons = {
        m: {"reference": ref, **paired_bootstrap(verdicts[ref], verdicts[m], exp.bootstrap_samples)}
        for m, ref in exp.references().items()
        if m in verdicts and ref in verdicts
    }
    tuning = {
        m: {
            f"{r['learning_rate']:g}": {f: v["auto"] for f, v in r["test"]["per_family"].items()} | {"all": r["test"]["auto"]}
            for r in runs
            if r["method"] == m and r["seed"] == 0 and "test" in r  # a rate not chosen is evaluated on validation only
        }
        for m in names
    }
    return {"methods": methods, "comparisons": comparisons, "tuning_per_family": tuning}


def write_outputs(
    out: Path,
    exp,
    runs: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, float],
    sel: Mapping[str, Any],
    walls: dict[str, float],
    started: float,
    *,
    status: str = "exploratory",
    larger: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """results.json, results.md and plots/*.png; returns results.json's content. `status`:
    confirmatory (the pre-registered config, its gate passed) or exploratory; `larger`: the runs and
    chosen rates at the larger model size, if any."""
    results = {"status": status, "config_hash": exp.config_hash(), **summarize_runs(exp, runs, chosen)}
    results["warmup"] = warmup_summary(out, "base")
    if larger:
        results["larger"] = summarize_runs(exp, larger["runs"], larger["chosen"], exp.larger_methods)
        results["larger"]["warmup"] = warmup_summary(out, "larger")  # the larger size has its own warm-up
        for key, split in (("test_problems", "heldout"), ("validation_problems", "validation")):
            results["larger"][key] = len(read_rows(setup_dir(out, "larger") / "world" / f"{split}.jsonl"))
    results["selectivity"] = sel
    verdicts = {"base/test": verdicts_of(runs, chosen, exp.seeds, "test"),
                "base/generalisation": verdicts_of(runs, chosen, exp.seeds, "generalisation")}  # fmt: skip
    if larger:
        verdicts["larger/test"] = verdicts_of(larger["runs"], larger["chosen"], exp.seeds, "test")
    results["claims"] = analyse({k: v for k, v in verdicts.items() if v}, exp.bootstrap_samples)
    sgpo_like = [m for m in exp.methods if m.startswith("sgpo")]
    results["instance_weight"] = {
        m: instance_weight_series([run_dir(out, m, chosen[m], s) for s in range(exp.seeds)]) for m in sgpo_like
    }
    results["learning_rates"] = list(exp.learning_rates)
    results["seeds"] = list(range(exp.seeds))
    results["tuning_seeds"] = exp.tuning_seeds
    results["shared_warmup"] = True
    results["setup"] = exp.to_dict()
    results["test_problems"] = len(read_rows(out / "setup" / "world" / "heldout.jsonl"))
    results["validation_problems"] = len(read_rows(out / "setup" / "world" / "validation.jsonl"))
    write_plots(out, exp, results, chosen)
    walls["total"] = round(time.perf_counter() - started, 1)
    results["wall_seconds"] = walls
    # independent of resumption: what every run took (training + evaluation), whichever call ran it, at every size
    by_size = {"base": runs, **({"larger": larger["runs"]} if larger else {})}
    results["run_seconds_by_size"] = {
        size: round(sum(r["wall_seconds"]["train"] + r["wall_seconds"]["evaluate"] for r in rs), 1)
        for size, rs in by_size.items()
    }
    results["run_seconds_sum"] = round(sum(results["run_seconds_by_size"].values()), 1)
    (out / TABLE_FILE).write_text(format_markdown(results))
    write_json(out / RESULTS_FILE, results)
    return results


# -- Markdown --------------------------------------------------------------------------------------
def _pm(d: Mapping[str, float]) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def _tuning(tuning_seeds: int) -> str:
    return "seed 0" if tuning_seeds == 1 else f"the mean over seeds 0–{tuning_seeds - 1}"


def _lr(x: float) -> str:
    return f"{x:g}"


def _metric(results: Mapping[str, Any]) -> str:
    """How the accuracy was measured: greedy, or pass@1 over k samples at temperature T."""
    setup = results.get("setup", {}).get("setup", {})
    k, t = setup.get("eval_samples", 1), setup.get("eval_temperature", 0.0)
    return (
        "greedy"
        if k == 1
        else f"autonomous pass@1 over {k} samples at T = {t:g} (guided: {'greedy' if setup.get('eval_guided_samples', 1) == 1 else 'sampled'})"
    )


def _main_table(results: Mapping[str, Any]) -> list[str]:
    """The main table: chosen rate, validation and test accuracy, intervals, cost, per method."""
    methods = results["methods"]
    lrs = [_lr(x) for x in results["learning_rates"]]
    comp = results["comparisons"]
    n_seeds = len(results["seeds"])
    default_reference = all(c["reference"] == "sgpo" for c in comp.values())
    lines = [
        f"Held-out test: {results['test_problems']} problems, {_metric(results)}, {n_seeds} RL seeds per method from one shared "
        f"warm-up; learning rate chosen per method on {results['validation_problems']} validation problems "
        f"({_tuning(results.get('tuning_seeds', 1))}). Warm-up: autonomous {results['warmup']['test_auto']:.3f}, guided {results['warmup']['test_guided']:.3f}.",
        "",
        "| method | chosen lr | validation auto at " + " / ".join(lrs) + " | test auto (mean ± std) | test guided "
        f"| {'SGPO' if default_reference else 'reference'} − method [95% CI] | generated tokens / run | train s / run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m, r in methods.items():
        val = " / ".join(f"{r['validation_auto'].get(x, float('nan')):.3f}" for x in lrs)
        c = comp.get(m)
        diff = "—" if c is None else f"{c['mean_difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
        if c is not None and not default_reference:
            diff = f"{c['reference']} − {m}: {diff}"
        lines.append(
            f"| {m} | {_lr(r['chosen_learning_rate'])} | {val} | {_pm(r['test_auto'])} | {_pm(r['test_guided'])} "
            f"| {diff} | {r['generated_tokens_per_run']:.0f} | {r['train_seconds_per_run']:.0f} |"
        )
    return lines


def _larger_tables(results: Mapping[str, Any]) -> list[str]:
    """The main and per-family tables of the larger model size (its own warm-up, runs and rates)."""
    if "larger" not in results:
        return []
    view = {**results, **results["larger"]}  # the grid, seeds and setup are the base size's
    return (
        ["", "**At the larger model size** (`larger_model` of the config; its own warm-up):", ""]
        + _main_table(view)
        + _family_tables(view)
    )


def _family_tables(results: Mapping[str, Any]) -> list[str]:
    """Test autonomous accuracy per family: at the chosen rate (mean over seeds), and of every tuning run."""
    methods = results["methods"]
    lrs = [_lr(x) for x in results["learning_rates"]]
    lines: list[str] = []
    families = list(results["warmup"]["per_family_auto"])
    lines += [
        "",
        "Test autonomous accuracy per family (mean over seeds, chosen rate):",
        "",
        "| method | " + " | ".join(families) + " |",
        "| --- |" + " ---: |" * len(families),
    ]
    lines.append("| warm-up | " + " | ".join(f"{results['warmup']['per_family_auto'][f]:.3f}" for f in families) + " |")
    for m, r in methods.items():
        lines.append(f"| {m} | " + " | ".join(f"{r['per_family_auto'][f]:.3f}" for f in families) + " |")
    lines += [
        "",
        "Test autonomous accuracy per family of the tuning runs evaluated on the test split (seed 0; a rate"
        " not chosen is evaluated on validation only), by learning rate:",
        "",
        "| method | lr | " + " | ".join(families) + " | all |",
        "| --- | ---: |" + " ---: |" * (len(families) + 1),
    ]
    for m, by_lr in results["tuning_per_family"].items():
        for x in lrs:
            if x in by_lr:
                lines.append(f"| {m} | {x} | " + " | ".join(f"{by_lr[x][f]:.3f}" for f in [*families, "all"]) + " |")
    return lines


def _selectivity_table(results: Mapping[str, Any]) -> list[str]:
    """The share of each per-token signal's mass on the strategy-critical tokens."""
    lines: list[str] = []
    sel = results["selectivity"]
    lines += [
        "",
        f"Selectivity on the oracle responses of {sel['rows']} validation problems: share of each per-token "
        "signal's mass on the strategy-critical tokens vs their share of the tokens (enrichment = ratio):",
        "",
        "| model | signal | critical token share | mass share | enrichment | top-5% token mass share |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, v in sel.items():
        if not isinstance(v, dict):
            continue
        for signal in ("forward_kl", "imitation_nll"):
            s = v[signal]
            fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
            lines.append(
                f"| {name} | {signal} | {fmt(s['token_share'])} | {fmt(s['mass_share'])} | {fmt(s['enrichment'])} "
                f"| {fmt(s['top_mass_share'].get('5%'))} |"
            )
    return lines


def _weight_table(results: Mapping[str, Any]) -> list[str]:
    """The mean instance weight against the autonomous accuracy over training."""
    lines: list[str] = []
    lines += [
        "",
        "Mean instance weight vs autonomous accuracy of the rollouts over training (mean over seeds):",
        "",
        "| method | weight, first step → last | autonomous accuracy, first → last | correlation over (run, step) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for m, s in results["instance_weight"].items():
        if s["steps"]:
            corr = "–" if s["correlation"] is None else f"{s['correlation']:+.2f}"
            lines.append(
                f"| {m} | {s['weight_mean'][0]:.3f} → {s['weight_mean'][-1]:.3f} | "
                f"{s['accuracy_auto'][0]:.3f} → {s['accuracy_auto'][-1]:.3f} | {corr} |"
            )
    return lines


def format_markdown(results: Mapping[str, Any]) -> str:
    """The tables of results.md: main table, per-family accuracy, tuning per family, selectivity,
    instance weight."""
    head = []
    if "status" in results:
        head = [f"**{results['status'].capitalize()} results** (config hash `{results['config_hash'][:12]}`).", ""]
    lines = head + _main_table(results) + _family_tables(results) + _larger_tables(results)
    lines += _selectivity_table(results) + _weight_table(results)
    if "claims" in results:
        lines += format_claims(results["claims"])
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------------------------------
def _rolling(values: Sequence[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def _mean_curve(out: Path, exp, chosen: Mapping[str, float], m: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, the mean over seeds of metric `key` at each step) of method `m`'s runs at its chosen rate."""
    series = []
    for s in range(exp.seeds):
        logs = read_metrics(run_dir(out, m, chosen[m], s) / "metrics.jsonl")[0]
        series.append({int(r["step"]): r[key] for r in logs if key in r and "train_runtime" not in r})
    steps = sorted(set.intersection(*(set(x) for x in series)))
    return steps, [statistics.fmean(x[t] for x in series) for t in steps]


def _plot_learning_curves(plt, out: Path, exp, chosen: Mapping[str, float], colours: Mapping[str, Any]) -> Path:
    """plots/learning_curves.png: training reward of the RL methods, SFT's loss (mean over seeds, rolling)."""
    folder = out / "plots"
    fig, (ax, ax_sft) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    window = max(1, exp.setup.train.max_steps // 10)
    for m in exp.methods:
        if METHODS[m].base == "sft":
            steps, loss = _mean_curve(out, exp, chosen, m, "loss")
            ax_sft.plot(steps, _rolling(loss, window), color=colours[m], label=m)
            continue
        steps, reward = _mean_curve(out, exp, chosen, m, "reward/auto")
        ax.plot(
            steps,
            _rolling(reward, window),
            color=colours[m],
            label=f"{m} (lr {chosen[m]:g})",
            linestyle="-" if m in ("sgpo", "grpo", "luffy") else "--",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"autonomous reward (mean over seeds, rolling {window})")
    ax.set_title("Training reward of the autonomous rollouts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax_sft.set_xlabel("optimizer step")
    ax_sft.set_ylabel("SFT loss (nats / token)")
    ax_sft.set_title("SFT training loss")
    ax_sft.grid(alpha=0.3)
    fig.tight_layout()
    curves = folder / "learning_curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)
    return curves


def _plot_test_accuracy(plt, folder: Path, exp, results: Mapping[str, Any], colours: Mapping[str, Any]) -> Path:
    """plots/test_accuracy.png: held-out autonomous accuracy, mean ± std over seeds."""
    fig, ax = plt.subplots(figsize=(9, 4))
    names = list(results["methods"])
    means = [results["methods"][m]["test_auto"]["mean"] for m in names]
    stds = [results["methods"][m]["test_auto"]["std"] for m in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=[colours[m] for m in names])
    ax.axhline(results["warmup"]["test_auto"], color="black", linestyle=":", label="warm-up")
    for i, v in enumerate(means):
        ax.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("held-out autonomous accuracy")
    ax.set_title(f"Test accuracy, mean ± std over {exp.seeds} seeds")
    ax.legend()
    fig.tight_layout()
    bars = folder / "test_accuracy.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)
    return bars


def _plot_instance_weight(plt, folder: Path, results: Mapping[str, Any], colours: Mapping[str, Any]) -> Path:
    """plots/instance_weight.png: SGPO's mean instance weight and autonomous accuracy per step, and every (run, step)."""
    fig, (ax, ax_xy) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax2 = ax.twinx()
    shown = [m for m in ("sgpo", "sgpo_constant_weight") if results["instance_weight"].get(m, {}).get("steps")]
    for m in shown:
        s = results["instance_weight"][m]
        ax.plot(s["steps"], s["weight_mean"], color=colours[m], label=f"{m}: mean instance weight")
        ax2.plot(s["steps"], s["accuracy_auto"], color=colours[m], linestyle=":", label=f"{m}: autonomous accuracy")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean instance weight (solid)")
    ax2.set_ylabel("autonomous accuracy of the rollouts (dotted)")
    ax.set_title("Over training (mean over seeds, chosen rate)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    for m, s in results["instance_weight"].items():
        if s["pairs"] and m != "sgpo_constant_weight":
            corr = "–" if s["correlation"] is None else f"{s['correlation']:+.2f}"
            ax_xy.scatter(
                [a for _, a in s["pairs"]],
                [w for w, _ in s["pairs"]],
                s=12,
                alpha=0.6,
                color=colours[m],
                label=f"{m} (r = {corr})",
            )
    ax_xy.set_xlabel("autonomous accuracy of the step's rollouts")
    ax_xy.set_ylabel("mean instance weight of the step")
    ax_xy.set_title("Every (run, step)")
    ax_xy.grid(alpha=0.3)
    ax_xy.legend(fontsize=7)
    fig.tight_layout()
    weights = folder / "instance_weight.png"
    fig.savefig(weights, dpi=110)
    plt.close(fig)
    return weights


def write_plots(out: Path, exp, results: Mapping[str, Any], chosen: Mapping[str, float]) -> list[Path]:
    """plots/learning_curves.png (training reward of the RL methods, SFT's loss), plots/test_accuracy.png
    (mean ± std over seeds), plots/instance_weight.png (SGPO's mean instance weight and autonomous
    accuracy per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    colours = dict(zip(exp.methods, plt.get_cmap("tab10").colors))
    curves = _plot_learning_curves(plt, out, exp, chosen, colours)
    bars = _plot_test_accuracy(plt, folder, exp, results, colours)
    weights = _plot_instance_weight(plt, folder, results, colours)
    return [curves, bars, weights]
