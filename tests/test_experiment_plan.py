"""`sgpo experiment --plan`: how far a folder has got and the time left, from synthetic run.json files
(the layout `sgpo.world.experiment.run_one` writes; only the fields the plan reads), with the expected
figures derived by hand below. The CLI is run for real on such a folder."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sgpo.world.experiment import load_config, prepare_experiment
from sgpo.world.experiment_plan import experiment_plan, format_plan
from sgpo.world.methods import run_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "world_v1.yaml"


def write_run(out: Path, method: str, lr: float, seed: int, train: float, evaluate: float, val: float, full: bool) -> None:
    d = run_dir(out, method, lr, seed)
    d.mkdir(parents=True)
    run = {"method": method, "learning_rate": lr, "seed": seed, "validation": {"auto": val}}
    run["wall_seconds"] = {"train": train, "evaluate": evaluate}
    if full:
        run["test"] = {"auto": 0.777}
    (d / "run.json").write_text(json.dumps(run))


@pytest.fixture
def folder(tmp_path):
    exp = load_config(CONFIG, quick=True)
    exp = replace(exp, learning_rates=(1e-5, 1e-4), seeds=3, tuning_seeds=2, larger_model=None, processes=2,
                  methods=("grpo", "sgpo", "sgpo_imitation"), compare={})  # fmt: skip
    out = tmp_path / "out"
    prepare_experiment(out, exp)
    # grpo: every tuning run in; 1e-4 has the better mean validation accuracy (0.55 vs 0.5), so it is chosen;
    # its seed 0 is evaluated in full (evaluate 40 s), seed 1 not yet, seed 2 not trained
    write_run(out, "grpo", 1e-5, 0, 100, 10, 0.5, False)
    write_run(out, "grpo", 1e-5, 1, 100, 10, 0.5, False)
    write_run(out, "grpo", 1e-4, 0, 100, 40, 0.6, True)
    write_run(out, "grpo", 1e-4, 1, 100, 10, 0.5, False)
    # sgpo: one tuning run of four
    write_run(out, "sgpo", 1e-5, 0, 200, 10, 0.9, False)
    return out, exp


def test_the_plan_counts_chooses_and_estimates_as_derived_by_hand(folder):
    out, exp = folder
    plan = experiment_plan(out, exp)
    by = {m.method: m for m in plan.methods}
    # means: tuning evaluation (10, 10, 10, 10) -> 10 s; full evaluation (40) -> 40 s, so 30 s to add
    # to a tuning run; training: grpo 100 s, sgpo 200 s, sgpo_imitation (no run) its trainer's: 200 s
    g, s, i = by["grpo"], by["sgpo"], by["sgpo_imitation"]
    assert (g.tuning_done, g.tuning_total, g.rate, g.full_done, g.full_total) == (4, 4, 1e-4, 1, 3)
    assert g.seconds_left == pytest.approx(30 + (100 + 40))  # seed 1: the rest of its evaluation; seed 2: all
    assert (s.tuning_done, s.rate, s.full_done) == (1, None, 0)
    assert s.seconds_left == pytest.approx(3 * (200 + 10) + 2 * 30 + (200 + 40))  # 930: rate unknown, cost known
    assert (i.tuning_done, i.rate) == (0, None)
    assert i.seconds_left == pytest.approx(4 * (200 + 10) + 2 * 30 + (200 + 40))  # 1140
    assert plan.seconds_done == pytest.approx(3 * 110 + 140 + 210)  # 680
    assert plan.unestimated == 0
    text = format_plan(plan)
    assert "| base | grpo | 4/4 | 0.0001 | 1/3 | 3 min |" in text  # 170 s
    assert "about 37 min of run time, about 19 min of wall time at 2 processes" in text  # 2240 s; / 2 = 18.7 min
    for accuracy in ("0.55", "0.9", "0.777", "0.6"):  # nothing that could unblind a running experiment
        assert accuracy not in text


def test_with_no_full_evaluation_yet_its_cost_is_counted_as_not_estimated(tmp_path):
    exp = replace(load_config(CONFIG, quick=True), learning_rates=(1e-5,), seeds=2, tuning_seeds=1, larger_model=None,
                  methods=("grpo",), compare={})  # fmt: skip
    out = tmp_path / "out"
    prepare_experiment(out, exp)
    write_run(out, "grpo", 1e-5, 0, 100, 10, 0.5, False)  # chosen (the only rate); seed 0 to finish, seed 1 to train
    plan = experiment_plan(out, exp)
    assert plan.methods[0].rate == 1e-5 and plan.seconds_left == 0 and plan.unestimated == 2
    assert "plus 2 runs or evaluations with nothing yet to estimate them from" in format_plan(plan)


def test_cli_plan_reads_the_folder_and_writes_nothing(folder, tmp_path):
    out, exp = folder
    (tmp_path / "exp.yaml").write_text(
        "setting: quick\nworld: {heldout: 3, train: 2, warmup: 60, validation: 2}\n"
        "learning_rates: [1.0e-5, 1.0e-4]\nseeds: 3\ntuning_seeds: 2\nmethods: [grpo, sgpo, sgpo_imitation]\n"
    )
    before = sorted(p for p in out.rglob("*"))
    cmd = [sys.executable, "-m", "sgpo.cli", "experiment", "--config", str(tmp_path / "exp.yaml"), "--out", str(out), "--plan"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # the YAML is another experiment than the fixture's (its world differs): refused in one line
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "another configuration" in proc.stderr
    fresh = tmp_path / "fresh"
    proc = subprocess.run([*cmd[:-3], "--out", str(fresh), "--plan"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # per method: 4 tuning runs, then the 2 tuning seeds evaluated in full and 1 further seed: 3 x 7
    assert f"nothing has run in {fresh} yet: 21 runs and evaluations to go" in proc.stdout
    assert not fresh.exists() and sorted(p for p in out.rglob("*")) == before
