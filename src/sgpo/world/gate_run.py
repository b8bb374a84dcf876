"""`sgpo experiment --gate`: the gate (`sgpo.world.gate`) of an experiment's world, computed from the
warm-up and the two positive controls (GRPO, SFT) alone, at every model size — no SGPO or LUFFY run.

    sgpo experiment --config experiments/world_v2.yaml --out runs/world-v2 --gate

Per size, from the shared world and warm-up (`setup/`, `setup-larger/`):
- the warm-up's evaluations per record (`gate/<size>/warmup.json`: test, generalisation splits) and
  its autonomous pass rate on every training problem (`samples` each at T = 1);
- the teacher's token statistics on guided rollouts of validation problems;
- GRPO and SFT tuned on the grid and run with every seed, as the experiment runs them (the same
  run folders: the experiment reuses them);
then C1–C9 and C11 per size, C10 across the sizes, printed as a table and kept in `gate.json`
(with the config hash; `passed` is every criterion of every size) and `gate.md`.
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
from sgpo.world import gate
from sgpo.world.claims import paired_bootstrap
from sgpo.world.evaluate import heldout_accuracy
from sgpo.world.experiment import GATE_FILE, ExperimentConfig, prepare_experiment, tune_and_seed
from sgpo.world.gate_measure import pass_rates, shortcut_stats, teacher_token_stats
from sgpo.world.generate import GENERALISATION_SPLITS
from sgpo.world.methods import setup_dir
from sgpo.world.model import load_model, num_parameters
from sgpo.world.pipeline import run_pipeline
from sgpo.world.progress import StageProgress
from sgpo.world.settings import WorldRunConfig
from sgpo.world.workers import set_determinism

CONTROLS = ("grpo", "sft")  # the positive controls the gate trains
GATE_TABLE = "gate.md"


def warmup_measurements(out: Path, exp: ExperimentConfig, size: str, cfg: WorldRunConfig) -> dict[str, Any]:
    """The warm-up's figures of one size (C1, C3, C4, C9 and the per-record test verdicts C6 and C7
    compare with), computed once and kept in `gate/<size>/warmup.json`."""
    path = out / "gate" / size / "warmup.json"
    if path.exists():
        return json.loads(path.read_text())
    set_determinism(cfg.seed, cfg.threads)
    world = setup_dir(out, size) / "world"
    model, tok = load_model(setup_dir(out, size) / "warmup")
    kw = dict(max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size, samples=cfg.eval_samples,
              temperature=cfg.eval_temperature, seed=0, per_record=True)  # fmt: skip
    result: dict[str, Any] = {"num_parameters": num_parameters(model)}
    result["test"] = heldout_accuracy(model, tok, read_rows(world / "heldout.jsonl"), **kw)
    for split in GENERALISATION_SPLITS:
        if split in cfg.world.per_family:
            result[split] = heldout_accuracy(model, tok, read_rows(world / f"{split}.jsonl"), **kw)
    result["train_pass_rates"] = pass_rates(model, tok, read_rows(world / "train.jsonl"), samples=exp.gate_samples,
                                            max_new_tokens=cfg.eval_max_new_tokens, batch_size=cfg.eval_batch_size)  # fmt: skip
    teacher = teacher_token_stats(model, tok, read_rows(world / "validation.jsonl")[: exp.gate_teacher_rows],
                                  max_new_tokens=cfg.eval_max_new_tokens)  # fmt: skip
    result["teacher"] = teacher
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


def _verdicts(runs: Sequence[Mapping[str, Any]], method: str, lr: float) -> np.ndarray:
    """(seeds, problems) test verdicts (pass rates) of `method` at `lr`, seeds in order."""
    fin = sorted((r for r in runs if r["method"] == method and r["learning_rate"] == lr), key=lambda r: r["seed"])
    return np.array([r["test"]["correct"]["auto"] for r in fin], dtype=np.float64)


def size_criteria(exp: ExperimentConfig, warm: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
                  chosen: Mapping[str, float], majority: Mapping[str, float], coincidence: float) -> list[gate.Criterion]:  # fmt: skip
    """C1–C9 and C11 of one model size."""
    test = warm["test"]
    base = np.tile(np.asarray(test["correct"]["auto"], dtype=np.float64), (exp.seeds, 1))
    gains, change = {}, {}
    for m in CONTROLS:
        v = _verdicts(runs, m, chosen[m])
        boot = paired_bootstrap(v, base, exp.bootstrap_samples)
        gains[m] = (boot["mean_difference"], *boot["ci95"])
        fin = [r for r in runs if r["method"] == m and r["learning_rate"] == chosen[m]]
        change[m] = {
            f: statistics.fmean(r["test"]["per_family"][f]["auto"] for r in fin) - test["per_family"][f]["auto"]
            for f in test["per_family"]
        }
    between = paired_bootstrap(
        _verdicts(runs, "grpo", chosen["grpo"]), _verdicts(runs, "sft", chosen["sft"]), exp.bootstrap_samples
    )
    grpo = [r for r in runs if r["method"] == "grpo" and r["learning_rate"] == chosen["grpo"]]
    clip = [r["clip_fraction"] for r in grpo if r.get("clip_fraction") is not None]
    teacher = warm["teacher"]
    return [
        gate.headroom(warm["train_pass_rates"]),
        gate.signal(sum(r["zero_gradient_steps"] for r in grpo), sum(r["steps"] for r in grpo)),
        gate.guidance(test["per_family"]),
        gate.teacher_not_trajectory(teacher["noncritical_entropy"], teacher["kl"], teacher["nll"]),
        gate.shortcuts(majority, coincidence),
        gate.positive_controls(gains, chosen, exp.learning_rates),
        gate.capacity(change),
        gate.resolution((between["ci95"][1] - between["ci95"][0]) / 2),
        gate.generalisation({s: warm[s] for s in GENERALISATION_SPLITS if s in warm}),
        gate.mechanisms({"grpo": exp.setup.train.num_iterations}, statistics.fmean(clip) if clip else None, None),
    ]


def _report(report: dict[str, Any], sizes: Mapping[str, tuple[int, list[gate.Criterion]]], expected: int,
            walls: dict[str, float], started: float) -> dict[str, Any]:  # fmt: skip
    """gate.json's content from the sizes measured so far: complete (C10 and the verdict) once all
    `expected` sizes are in, else marked incomplete and not passed."""
    report = {**report, "complete": len(sizes) == expected}
    table = [f"Model size {size} ({params / 1e6:.2f} M parameters):\n\n{gate.format_table(criteria)}\n"
             for size, (params, criteria) in sizes.items()]  # fmt: skip
    if report["complete"]:
        scaling = gate.scaling(sizes)
        report["scaling"] = scaling.to_dict()
        report["passed"] = all(c.passed for c in sizes["base"][1]) and scaling.passed
        table.append(gate.format_table([scaling]) + "\n")
        verdict = "PASSED" if report["passed"] else "NOT PASSED"
    else:
        report["passed"] = False
        verdict = f"INCOMPLETE ({len(sizes)} of {expected} model sizes measured; rerun the command to go on)"
    report["wall_seconds"] = {**walls, "total": round(time.perf_counter() - started, 1)}
    report["table"] = "\n".join([f"Gate of config `{report['config_hash'][:12]}`: {verdict}", "", *table])
    return report


def run_gate(out: str | Path, exp: ExperimentConfig, *, overwrite: bool = False, progress=None) -> dict[str, Any]:
    """The gate (module doc); returns gate.json's content. gate.json and gate.md are written after
    each model size (marked incomplete until every size is measured), so an interrupted gate leaves
    the figures of the sizes it finished; a rerun resumes (finished runs and measurements are kept)."""
    out = prepare_experiment(out, exp, overwrite)
    progress = progress or StageProgress(enabled=False)
    started, walls = time.perf_counter(), {}
    sizes: dict[str, tuple[int, list[gate.Criterion]]] = {}
    report: dict[str, Any] = {"config_hash": exp.config_hash(), "sizes": {}}
    for size, cfg in exp.sizes().items():  # one size after the other: the base size's figures come first
        t0 = time.perf_counter()
        run_pipeline(setup_dir(out, size), cfg, methods=(), progress=progress)
        walls[f"setup (world, warm-up) ({size})"] = round(time.perf_counter() - t0, 1)
        rows = read_rows(setup_dir(out, size) / "world" / "train.jsonl") + read_rows(
            setup_dir(out, size) / "world" / "heldout.jsonl"
        )
        majority, coincidence = shortcut_stats(rows)
        t0 = time.perf_counter()
        with progress.stage(f"gate measurements ({size})", 1):
            warm = warmup_measurements(out, exp, size, cfg)
        walls[f"warm-up measurements ({size})"] = round(time.perf_counter() - t0, 1)
        runs, chosen = tune_and_seed(out, exp, CONTROLS, size, progress, walls)
        criteria = size_criteria(exp, warm, runs, chosen, majority, coincidence)
        sizes[size] = (warm["num_parameters"], criteria)
        report["sizes"][size] = {
            "num_parameters": warm["num_parameters"],
            "criteria": [c.to_dict() for c in criteria],
            "chosen_learning_rates": chosen,
            "warmup": {k: warm[k]["auto"] for k in ("test", *GENERALISATION_SPLITS) if k in warm},
            "warmup_guided": {k: warm[k]["guided"] for k in ("test", *GENERALISATION_SPLITS) if k in warm},
            "critical_kl_share": warm["teacher"]["critical_kl_share"],
            "critical_token_share": warm["teacher"]["critical_token_share"],
        }
        done = _report(report, sizes, len(exp.sizes()), walls, started)
        write_json(out / GATE_FILE, done)
        (out / GATE_TABLE).write_text(done["table"] + "\n")
    return done
