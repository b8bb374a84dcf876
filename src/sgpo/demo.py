"""The strategy-world demo: GRPO vs SGPO from the same warm-up checkpoint, on equal budgets.

    build world → extract strategies → tokenizer + tiny model → warm-up (SFT)
      → GRPO  (num_generations = 8 autonomous)                      ┐ same warm-up start, same
      → SGPO  (num_generations = 4 autonomous + 4 guided)            ┘ steps, same rollouts/problem
      → held-out evaluation of warm-up, GRPO and SGPO (autonomous, and guided for reference)
      → table, DIR/results.json (+ DIR/per_family.json), DIR/plots/*.png, DIR/<method>/report/index.html

The first stages are `sgpo.world.pipeline`'s; this module adds the two training runs, their
evaluation and the outputs. Every stage writes its output atomically and is skipped when it is
already there, so a rerun after an interruption resumes; a folder holding a run of another
configuration is refused unless `overwrite` (then it starts clean), so two runs are never mixed.
Everything is seeded: the same seed gives the same numbers on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgpo.data import write_json
from sgpo.world.pipeline import OutputDirError, Progress, WorldRunConfig, make_config, prepare_out, run_world_stages

METHODS = ("grpo", "sgpo")
DEMO_CONFIG_FILE = "demo_config.json"
RESULTS_FILE = "results.json"
PER_FAMILY_FILE = "per_family.json"


@dataclass(frozen=True)
class TrainSettings:
    """One GRPO or SGPO run from the warm-up checkpoint. Both methods get the same settings except
    the rollout split and the distillation term, so they see the same problems, the same number of
    rollouts per problem and the same number of optimizer steps."""

    max_steps: int = 60
    problems_per_step: int = 8
    rollouts_per_problem: int = 8  # GRPO: 8 autonomous; SGPO: 4 autonomous + 4 guided
    max_completion_length: int = 64
    # Shared by both methods, chosen on GRPO alone: of 2e-4 / 5e-5 / 1e-5 (60 steps), 1e-5 gives GRPO
    # its best held-out autonomous accuracy while keeping the warm-up's guided skill (2e-4 halves it).
    # The sweep and what SGPO does at each rate: README, "The demo".
    learning_rate: float = 1e-5
    temperature: float = 1.0
    loss_type: str = "dapo"
    distill_coef: float = 1.0
    instance_weighting: str = "marginal"
    seed: int = 0

    def sgpo_config_kwargs(self, method: str) -> dict[str, Any]:
        half = self.rollouts_per_problem // 2
        rollout = (
            dict(num_generations=self.rollouts_per_problem, num_guided_generations=0, distill_coef=0.0)
            if method == "grpo"
            else dict(num_generations=half, num_guided_generations=self.rollouts_per_problem - half, distill_coef=self.distill_coef)
        )
        return dict(
            per_device_train_batch_size=self.problems_per_step,
            max_steps=self.max_steps,
            max_completion_length=self.max_completion_length,
            learning_rate=self.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            temperature=self.temperature,
            loss_type=self.loss_type,
            instance_weighting=self.instance_weighting,
            seed=self.seed,
            data_seed=self.seed,
            **rollout,
        )


@dataclass(frozen=True)
class DemoConfig:
    world: WorldRunConfig
    train: TrainSettings = field(default_factory=TrainSettings)

    def to_dict(self) -> dict[str, Any]:
        return {"world": self.world.to_dict(), "train": asdict(self.train)}


def make_demo_config(seed: int = 0, quick: bool = False) -> DemoConfig:
    world = make_config(seed, quick)
    if quick:
        train = TrainSettings(max_steps=6, problems_per_step=4, max_completion_length=world.eval_max_new_tokens, seed=seed)
    else:
        train = TrainSettings(max_completion_length=world.eval_max_new_tokens, seed=seed)
    return DemoConfig(world=world, train=train)


# ------------------------------------------------------------------------------------------ stages


def _check_demo_config(out: Path, cfg: DemoConfig) -> None:
    path = out / DEMO_CONFIG_FILE
    if path.exists():
        if json.loads(path.read_text()) != cfg.to_dict():
            raise OutputDirError(f"{out}: holds a demo run of another configuration ({path}); pass --overwrite to replace it")
        return
    write_json(path, cfg.to_dict())


def stage_train(out: Path, cfg: DemoConfig, method: str, progress: Progress) -> Path:
    """Train `method` from `warmup/` into `<method>/` (skipped when it is already there)."""
    from sgpo.config import SGPOConfig
    from sgpo.trainer import SGPOTrainer
    from sgpo.world.prompt import WORLD_PROMPT_FORMAT

    final = out / method
    if (final / "model.safetensors").exists():
        return final
    tmp = out / f"{method}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    fmt = WORLD_PROMPT_FORMAT
    args = SGPOConfig(
        output_dir=str(tmp),
        prompt_template=fmt.template,
        guided_prompt_template=fmt.guided_template,
        system_prompt=fmt.system_prompt,
        use_chat_template=fmt.use_chat_template,
        max_prompt_length=None,
        reward_funcs=["accuracy"],
        logging_steps=1,
        save_strategy="no",
        report_to="tensorboard",
        disable_tqdm=True,
        use_cpu=True,
        **cfg.train.sgpo_config_kwargs(method),
    )
    with progress.stage(f"train {method.upper()}", cfg.train.max_steps) as advance:
        from transformers import TrainerCallback

        class _Advance(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                advance(state.global_step)

        from transformers.trainer_callback import PrinterCallback

        trainer = SGPOTrainer(str(out / "warmup"), args, train_dataset=str(out / "world" / "train.jsonl"), callbacks=[_Advance()])
        trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl say it all
        trainer.train()
        trainer.save_model(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def method_result(heldout: dict[str, Any]) -> dict[str, Any]:
    """The results.json entry of one model from `sgpo.world.evaluate.heldout_accuracy`'s output."""
    return {
        "heldout_auto": heldout["auto"],
        "heldout_guided": heldout["guided"],
        "per_family": {fam: {"auto": r["auto"], "guided": r["guided"]} for fam, r in heldout["per_family"].items()},
    }


def stage_eval(out: Path, cfg: DemoConfig, name: str, progress: Progress) -> dict[str, Any]:
    """Greedy held-out accuracy of `out/<name>`, autonomous and guided, overall and per family
    (the evaluation harness, as for the warm-up checkpoint)."""
    path = out / "eval" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    from sgpo.data import read_rows
    from sgpo.world.evaluate import heldout_accuracy
    from sgpo.world.model import load_model

    records = read_rows(out / "world" / "heldout.jsonl")
    model, tokenizer = load_model(out / name)
    with progress.stage(f"evaluate {name.upper()}", 2 * len(records)) as advance:
        heldout = heldout_accuracy(
            model, tokenizer, records, max_new_tokens=cfg.world.eval_max_new_tokens, batch_size=cfg.world.eval_batch_size,
            on_progress=lambda done, total: advance(done),
        )
    result = method_result(heldout)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


# ------------------------------------------------------------------------------------------ outputs


def write_plots(out: Path, methods: dict[str, dict[str, Any]]) -> list[Path]:
    """`plots/reward_curves.png` (training reward of both runs) and `plots/heldout_accuracy.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgpo.evaluation.report import read_metrics

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"grpo": "tab:gray", "sgpo": "tab:blue"}
    for method in METHODS:
        logs = [m for m in read_metrics(out / method / "metrics.jsonl")[0] if "reward/auto" in m]
        ax.plot([m["step"] for m in logs], [m["reward/auto"] for m in logs], label=f"{method.upper()} autonomous", color=colours[method])
        if method == "sgpo":
            ax.plot([m["step"] for m in logs if "reward/guided" in m], [m["reward/guided"] for m in logs if "reward/guided" in m],
                    label="SGPO guided", color=colours[method], linestyle="--")
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
        bars = ax.bar(xs, vals, width, label="autonomous" if j == 0 else "guided (reference)", color=("tab:blue", "tab:orange")[j])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), [n.upper() if n != "warmup" else "warm-up" for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title("Held-out accuracy")
    ax.legend()
    fig.tight_layout()
    bars_png = folder / "heldout_accuracy.png"
    fig.savefig(bars_png, dpi=110)
    plt.close(fig)
    return [curves, bars_png]


def format_table(methods: dict[str, dict[str, Any]]) -> str:
    """Held-out accuracy per method (autonomous / guided), overall and per family, as plain text."""
    families = sorted({f for m in methods.values() for f in m.get("per_family", {})})
    head = ["", *[f"{n} auto" for n in methods], *[f"{n} guided" for n in methods]]
    rows = [head]
    for fam in families:
        rows.append([fam, *[f"{methods[n]['per_family'].get(fam, {}).get('auto', float('nan')):.3f}" for n in methods],
                     *[f"{methods[n]['per_family'].get(fam, {}).get('guided', float('nan')):.3f}" for n in methods]])
    rows.append(["all", *[f"{methods[n]['heldout_auto']:.3f}" for n in methods], *[f"{methods[n]['heldout_guided']:.3f}" for n in methods]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def run_demo(out: str | Path, *, seed: int = 0, quick: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole demo; returns `results.json`'s content with each method's `per_family`
    figures inside (written to `per_family.json`)."""
    t0 = time.perf_counter()
    cfg = make_demo_config(seed, quick)
    out = Path(out)
    with Progress(enabled=progress) as bars:
        world = run_world_stages(out, cfg.world, overwrite=overwrite, progress=bars)  # checks / creates `out`
        _check_demo_config(out, cfg)
        methods = {"warmup": method_result(world["heldout"])}
        for method in METHODS:
            stage_train(out, cfg, method, bars)
            methods[method] = stage_eval(out, cfg, method, bars)
    write_plots(out, methods)
    from sgpo.evaluation.report import render_report

    for method in METHODS:
        render_report(out / method)
    results = {"methods": methods, "wall_seconds": round(time.perf_counter() - t0, 1), "seed": seed}
    # results.json has exactly the documented keys; the per-family figures go next to it
    headline = {m: {k: r[k] for k in ("heldout_auto", "heldout_guided")} for m, r in methods.items()}
    write_json(out / PER_FAMILY_FILE, {"methods": {m: r["per_family"] for m, r in methods.items()}, "seed": seed})
    write_json(out / RESULTS_FILE, {**results, "methods": headline})
    return results

