"""How far an experiment folder has got, and roughly how long the rest will take (`sgpo experiment --plan`).

Reads the folder only (nothing is trained, evaluated or written) and never prints an accuracy: a
long pre-registered run can be watched without anyone seeing a result before it ends. For each model
size and method: the tuning runs finished (every rate of the grid x the tuning seeds), the rate they
chose once all of them are in (`sgpo.world.experiment.choose_rate`, the rule the experiment applies),
and the runs evaluated in full at that rate (every seed: the tuning seeds' runs get the test and
generalisation splits added, the further seeds are trained). The time left is estimated from the
folder's own finished runs (`wall_seconds` of run.json: train + evaluate, measured while `processes`
ran side by side): the mean training time of the method's runs at that size (else of the runs of its
trainer, e.g. any SGPO variant, else of every run of the size), and the mean evaluation time of a
tuning run (validation split) or of a full evaluation. A figure with nothing to estimate it from is
left out of the sum and counted as such.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.world.experiment import EXPERIMENT_FILE, ExperimentConfig, choose_rate, resumable
from sgpo.world.methods import METHODS, RUN_FILE, run_dir


@dataclass
class MethodPlan:
    """One method at one model size: finished / total runs of each stage, and the seconds of run time
    (train + evaluate, as run.json measures them) its unfinished runs are estimated to take."""

    size: str
    method: str
    tuning_done: int
    tuning_total: int
    rate: float | None  # the chosen rate; None until every tuning run is in
    full_done: int  # runs at the chosen rate evaluated in full (0 while the rate is not chosen)
    full_total: int
    seconds_left: float  # estimated run time of what is left (the part that could be estimated)
    unestimated: int = 0  # unfinished runs or evaluations with no finished run to estimate them from


@dataclass
class Plan:
    out: Path
    processes: int
    methods: list[MethodPlan] = field(default_factory=list)
    seconds_done: float = 0.0  # train + evaluate of every finished run (their sum, not wall time)

    @property
    def seconds_left(self) -> float:
        return sum(m.seconds_left for m in self.methods)

    @property
    def unestimated(self) -> int:
        return sum(m.unestimated for m in self.methods)


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def experiment_plan(out: str | Path, exp: ExperimentConfig) -> Plan:
    """The plan of experiment `exp` in folder `out` (module doc). `ValueError` when the folder holds
    another configuration's experiment (the run would refuse it too)."""
    out = Path(out)
    recorded = _read(out / EXPERIMENT_FILE)
    mine = json.loads(json.dumps(exp.to_dict()))
    if recorded is not None and not resumable(recorded, mine):
        raise ValueError(f"{out}: holds an experiment of another configuration ({out / EXPERIMENT_FILE})")
    plan = Plan(out, exp.processes)
    sizes = {"base": exp.methods, **({"larger": exp.larger_methods} if exp.larger_model is not None else {})}
    for size, methods in sizes.items():
        runs = {
            (m, lr, s): r
            for m in methods
            for lr in exp.learning_rates
            for s in range(exp.seeds)
            if (r := _read(run_dir(out, m, lr, s, size) / RUN_FILE)) is not None
        }
        plan.seconds_done += sum(r["wall_seconds"]["train"] + r["wall_seconds"]["evaluate"] for r in runs.values())
        estimate = _Estimates(runs)
        for m in methods:
            plan.methods.append(_method_plan(exp, size, m, runs, estimate))
    return plan


class _Estimates:
    """Mean seconds from finished runs: training (by method, by trainer, overall), evaluation of a
    tuning run (validation only) and a full evaluation."""

    def __init__(self, runs: Mapping[tuple[str, float, int], Mapping[str, Any]]):
        self.train: dict[str, list[float]] = {}
        self.base: dict[str, list[float]] = {}
        self.every: list[float] = []
        self.tuning_eval: list[float] = []
        self.full_eval: list[float] = []
        for (m, _, _), r in runs.items():
            t = r["wall_seconds"]
            self.train.setdefault(m, []).append(t["train"])
            self.base.setdefault(METHODS[m].base, []).append(t["train"])
            self.every.append(t["train"])
            (self.full_eval if "test" in r else self.tuning_eval).append(t["evaluate"])

    def training(self, method: str) -> float | None:
        return _first(_mean(self.train.get(method, [])), _mean(self.base.get(METHODS[method].base, [])), _mean(self.every))


def _method_plan(exp: ExperimentConfig, size: str, method: str, runs, estimate: _Estimates) -> MethodPlan:
    tuning = [(lr, s) for lr in exp.learning_rates for s in range(exp.tuning_seeds)]
    done = [runs[(method, lr, s)] for lr, s in tuning if (method, lr, s) in runs]
    rate = choose_rate(done) if len(done) == len(tuning) else None
    left, unestimated = 0.0, 0

    def add(*parts: float | None) -> None:
        nonlocal left, unestimated
        if any(p is None for p in parts):
            unestimated += 1
        else:
            left += sum(parts)  # type: ignore[arg-type]

    train, tune_eval, full_eval = estimate.training(method), _mean(estimate.tuning_eval), _mean(estimate.full_eval)
    extra_eval = None if full_eval is None or tune_eval is None else max(0.0, full_eval - tune_eval)
    for _ in range(len(tuning) - len(done)):
        add(train, tune_eval)
    full_done = 0
    if rate is None:  # the rate is unknown, the cost is not: every seed at some rate
        for s in range(exp.seeds):
            add(extra_eval) if s < exp.tuning_seeds else add(train, full_eval)
    else:
        for s in range(exp.seeds):
            r = runs.get((method, rate, s))
            if r is not None and "test" in r:
                full_done += 1
            elif r is not None:
                add(extra_eval)  # a tuning run: the test and generalisation splits to add
            else:
                add(train, full_eval)
    return MethodPlan(size, method, len(done), len(tuning), rate, full_done, exp.seeds, left, unestimated)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def format_plan(plan: Plan) -> str:
    """The plan as a table and a summary line (no accuracies: module doc)."""
    lines = [
        "| size | method | tuning runs | chosen rate | full evaluations | run time left |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in plan.methods:
        rate = "—" if m.rate is None else f"{m.rate:g}"
        left = _hours(m.seconds_left) + (f" (+{m.unestimated} not estimated)" if m.unestimated else "")
        lines.append(
            f"| {m.size} | {m.method} | {m.tuning_done}/{m.tuning_total} | {rate} | {m.full_done}/{m.full_total} | {left} |"
        )
    finished = all(m.tuning_done == m.tuning_total and m.full_done == m.full_total for m in plan.methods)
    if plan.seconds_done == 0:
        summary = f"nothing has run in {plan.out} yet: {plan.unestimated} runs and evaluations to go"
    elif finished:
        summary = f"every run is finished ({_hours(plan.seconds_done)} of run time); the experiment only writes its results now"
    else:
        summary = (
            f"run time so far {_hours(plan.seconds_done)}; left: about {_hours(plan.seconds_left)} of run time, "
            f"about {_hours(plan.seconds_left / plan.processes)} of wall time at {plan.processes} processes side by side"
            + (
                f", plus {plan.unestimated} runs or evaluations with nothing yet to estimate them from"
                if plan.unestimated
                else ""
            )
            + " (estimated from this folder's finished runs)"
        )
    return "\n".join([*lines, "", summary])
