"""`sgpo demo` = the strategy world's pipeline run to the end: the quick demo through the real CLI with
its output to a pipe (as under CI or `nohup`), the training runs in worker processes against the same
runs in this process, and the progress lines."""

import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from sgpo.world.generate import WorldSpec
from sgpo.world.model import ModelSpec
from sgpo.world.pipeline import DEMO_METHODS as METHODS
from sgpo.world.pipeline import run_pipeline
from sgpo.world.progress import StageProgress
from sgpo.world.results import paired_difference
from sgpo.world.settings import TrainSettings, WorldRunConfig
from sgpo.world.warmup import WarmupConfig

ROOT = Path(__file__).resolve().parents[1]
STAGES = (
    "build world",
    "extract strategies",
    "tokenizer + model",
    "warm-up",
    "evaluate warmup",
    "train grpo",
    "evaluate grpo",
    "train sgpo",
    "evaluate sgpo",
    "plots + reports",
)


def sgpo(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "sgpo", *args], capture_output=True, text=True, env=env, timeout=900, cwd=cwd)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    # a relative --out, as `make demo` passes; progress on: stderr is a pipe, so lines, not bars
    proc = sgpo("demo", "--quick", "--out", "run", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return folder / "run", proc


@pytest.mark.slow
def test_quick_demo_writes_results_plots_reports_and_prints_the_table(quick_demo):
    out, proc = quick_demo
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"methods", "wall_seconds", "seed", "metric"}
    assert results["metric"] == "autonomous: pass@1 over 4 samples at T = 1; guided: greedy"
    assert list(results["methods"]) == ["warmup", "grpo", "sgpo"]
    for r in results["methods"].values():
        # the documented keys, the greedy figure beside the sampled one
        assert set(r) == {"heldout_auto", "heldout_guided", "heldout_auto_greedy"}
        assert all(0.0 <= v <= 1.0 for v in r.values())
    per_family = json.loads((out / "per_family.json").read_text())["methods"]
    assert list(per_family) == ["warmup", "grpo", "sgpo"]
    for fams in per_family.values():
        assert len(fams) >= 6 and all(set(f) == {"auto", "guided", "greedy_auto"} for f in fams.values())
    assert results["seed"] == 0 and results["wall_seconds"] > 0
    for png in ("reward_curves.png", "heldout_accuracy.png"):
        assert (out / "plots" / png).stat().st_size > 5_000
    for method in ("grpo", "sgpo"):
        assert (out / method / "report" / "index.html").exists()
        assert (out / method / "model.safetensors").exists() and (out / method / "prompt_format.json").exists()
    assert "Held-out accuracy" in proc.stdout and "sgpo guided" in proc.stdout
    # what one seed cannot show, and where the pre-registered verdict is (a section that exists)
    pointer = re.search(r'docs/results\.md, "([^"]+)"', proc.stdout)
    assert pointer, proc.stdout
    assert f"### {pointer[1]}" in (Path(__file__).parents[1] / "docs" / "results.md").read_text()
    # each trained model against the warm-up: the printed difference is results.json's, its interval
    # the paired one over the per-problem pass rates kept in eval/<model>.json
    rates = {m: json.loads((out / "eval" / f"{m}.json").read_text())["auto_per_record"] for m in ("warmup", "grpo", "sgpo")}
    for m in ("grpo", "sgpo"):
        printed = re.search(rf"{m.upper()} − warm-up ([+-]\d\.\d{{3}}) ± (\d\.\d{{3}})", proc.stdout)
        assert printed, proc.stdout
        expected = results["methods"][m]["heldout_auto"] - results["methods"]["warmup"]["heldout_auto"]
        assert float(printed[1]) == pytest.approx(expected, abs=6e-4)
        mean, half = paired_difference(rates["warmup"], rates[m])
        assert (printed[1], printed[2]) == (f"{mean:+.3f}", f"{half:.3f}")

    # the two runs had equal budgets: same steps, same rollouts per problem
    logs = {m: [json.loads(x) for x in (out / m / "metrics.jsonl").read_text().splitlines()] for m in ("grpo", "sgpo")}
    steps = {m: [r["step"] for r in logs[m] if "loss" in r] for m in logs}
    assert steps["grpo"] == steps["sgpo"] and steps["grpo"]
    assert "reward/guided" in logs["sgpo"][0] and "reward/guided" not in logs["grpo"][0]
    # what else the numbers depend on is recorded: the fixed thread count, the CPU code path, versions
    numerics = json.loads((out / "warmup.json").read_text())["numerics"]
    assert numerics["threads"] == 1 and numerics["cpu_capability"] and numerics["torch"] and numerics["transformers"]


@pytest.mark.slow
def test_quick_demo_prints_a_line_per_stage_to_a_pipe(quick_demo):
    _, proc = quick_demo
    lines = proc.stderr.splitlines()
    for stage in STAGES:
        started = [x for x in lines if re.fullmatch(rf"\[\s*\d+\.\d s\] {re.escape(stage)}: started", x)]
        done = [x for x in lines if re.fullmatch(rf"\[\s*\d+\.\d s\] {re.escape(stage)}: done in \d+\.\d s", x)]
        assert len(started) == 1 and len(done) == 1, (stage, proc.stderr[-3000:])
    assert "\r" not in proc.stderr and "Loading weights" not in proc.stderr  # no bars drawn into the pipe


@pytest.mark.slow
def test_rerun_resumes_and_other_folders_are_refused(quick_demo, tmp_path):
    out, _ = quick_demo
    before = (out / "results.json").read_text()
    again = sgpo("demo", "--quick", "--out", str(out), "--no-progress")  # everything is there: nothing is redone
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr == ""  # --no-progress: no lines either
    assert json.loads((out / "results.json").read_text())["methods"] == json.loads(before)["methods"]

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = sgpo("demo", "--quick", "--out", str(other), "--no-progress")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert (other / "notes.txt").read_text() == "keep me"
    bad = sgpo("demo", "--quikc")
    assert bad.returncode == 2 and "unrecognized arguments: --quikc" in bad.stderr


def micro_config() -> WorldRunConfig:
    return WorldRunConfig(
        world=WorldSpec(per_family={"heldout": 2, "train": 2, "warmup": 8}),
        model=ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2),
        warmup=WarmupConfig(steps=3, batch_size=4, warmup_steps=1, save_every=2),
        train=TrainSettings(max_steps=2, problems_per_step=2, rollouts_per_problem=4, max_completion_length=8),
        eval_max_new_tokens=8,
    )


@pytest.fixture
def torch_globals():
    """`run_pipeline` in this process sets torch's thread count and deterministic kernels for the
    whole process (as `sgpo demo` wants); put them back so later tests run as they would alone."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.mark.slow
def test_runs_in_worker_processes_give_the_numbers_of_runs_in_this_process(tmp_path, torch_globals):
    cfg = micro_config()
    inline = run_pipeline(tmp_path / "inline", cfg, side_by_side=False)
    # an interrupted run left its temporary folder behind: the trainer must not find a run there
    stale = tmp_path / "workers" / "sgpo.tmp"
    stale.mkdir(parents=True)
    (stale / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (tmp_path / "workers" / "config.json").write_text(json.dumps(cfg.to_dict()))
    workers = run_pipeline(tmp_path / "workers", cfg, side_by_side=True)
    assert workers["methods"] == inline["methods"] and list(workers["methods"]) == ["warmup", *METHODS]
    for method in METHODS:
        metrics = [(tmp_path / run / method / "metrics.jsonl").read_text().splitlines() for run in ("inline", "workers")]
        losses = [[json.loads(x).get("loss") for x in m] for m in metrics]
        assert losses[0] == losses[1] and len([x for x in losses[0] if x is not None]) == 2, method
        assert (tmp_path / "workers" / method / "model.safetensors").read_bytes() == (
            tmp_path / "inline" / method / "model.safetensors"
        ).read_bytes(), method
    assert not stale.exists()
    assert all(workers["numerics"][m]["threads"] == cfg.threads == 1 for m in METHODS)  # fixed, not the core count
    assert {f"train {m}" for m in METHODS} <= set(workers["wall_seconds"])


def test_an_error_in_a_worker_run_reaches_the_caller(tmp_path, torch_globals):
    cfg = replace(micro_config(), train=replace(micro_config().train, loss_type="no-such-loss"))
    with pytest.raises(Exception, match="no-such-loss"):
        run_pipeline(tmp_path / "bad", cfg, side_by_side=True)


def test_progress_lines_start_end_and_at_least_every_interval():
    stream = io.StringIO()
    with StageProgress(stream=stream, terminal=False, interval=30.0) as progress:
        with progress.stage("warm-up", total=10) as advance:
            advance(3)
            progress.tick(now=time.monotonic() + 31)  # 31 s without a line: one line per running stage
            progress.begin("train sgpo", 60)  # stages may overlap
            progress.update("train sgpo", 7)
            progress.tick(now=time.monotonic() + 5)  # a line was just printed: nothing
            progress.tick(now=time.monotonic() + 40)
            progress.end("train sgpo")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("warm-up: started") and re.search(r"warm-up: done in \d+\.\d s$", lines[-1]), lines
    assert re.search(r"warm-up: 3/10, 3\d s so far$", lines[1]), lines
    assert lines[2].endswith("train sgpo: started")
    assert [x.split("] ")[1].split(",")[0] for x in lines[3:5]] == ["warm-up: 3/10", "train sgpo: 7/60"]
    assert lines[5].split("] ")[1].startswith("train sgpo: done in")
    assert len(lines) == 7 and all(re.match(r"\[\s*\d+\.\d s\] ", x) for x in lines)


def test_progress_ticks_on_its_own_and_marks_a_failed_stage():
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        with StageProgress(stream=stream, terminal=False, interval=0.0) as progress:
            with progress.stage("warm-up", total=5):
                deadline = time.monotonic() + 60
                while "0/5" not in stream.getvalue() and time.monotonic() < deadline:  # the ticker thread's line
                    time.sleep(0.05)
                raise RuntimeError("interrupted")
    text = stream.getvalue()
    assert "warm-up: 0/5" in text and "warm-up: stopped after" in text and "done in" not in text
    silent = io.StringIO()
    with StageProgress(enabled=False, stream=silent, terminal=False, interval=0.0) as progress:
        with progress.stage("warm-up", total=5) as advance:
            advance(5)
    assert silent.getvalue() == ""


def test_paired_difference_by_hand():
    # b − a = [1, 0, 0, -0.5]: mean 0.125; squared deviations 0.765625 + 0.015625 + 0.015625 + 0.390625
    # = 1.1875, sample variance 1.1875 / 3 = 0.3958333; half-width 1.96 × √(0.3958333 / 4) = 0.6165691
    mean, half = paired_difference([0, 0, 1, 1], [1, 0, 1, 0.5])
    assert mean == pytest.approx(0.125) and half == pytest.approx(0.6165691, abs=1e-6)
    assert paired_difference([0, 1], [1, 0])[0] == 0.0 and paired_difference([0, 1], [0, 1]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([0, 1], [1])
