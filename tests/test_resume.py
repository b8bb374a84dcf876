"""Exact resume through the real CLI: runs are killed with SIGKILL (real subprocesses) and resumed,
and the logged metrics and the final weights must equal the uninterrupted run's, bit for bit (CPU).

The runs sample their rollouts with Hugging Face `generate` (temperature 1) from the warmed-up tiny
model and score them with a reward that varies from completion to completion (even text length), so
advantages and instance weights (marginal, smoothed by an EMA) vary too: a resumed run reproduces the
uninterrupted one only if the checkpoint restores the model, the optimizer, the scheduler, the RNG
states, the data position and the instance-weight EMA.
8 problems, 2 per step: an epoch is 4 optimizer steps; checkpoints every 2 steps.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sgpo.testing import write_tiny_assets

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("time/", "tokens_per_second")  # wall-clock figures


def env():
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])  # tests/: the reward function below
    return dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def train_args(assets: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        str(ROOT / "recipes" / "tiny_cpu.yaml"),
        "--model_name_or_path",
        str(assets / "model"),
        "--dataset_name",
        str(assets / "train.jsonl"),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--lr_scheduler_type",
        "constant",
        "--instance_weight_ema",
        "0.5",
        "--distill_on",
        "all",
        "--reward_funcs",
        "conftest:text_length_reward",
        *extra,
    ]


def sgpo(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sgpo", *args], capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def step_logs(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.startswith(VOLATILE)} for m in lines if "loss" in m]


def assert_same_run(a: Path, b: Path, steps: int) -> None:
    logs_a, logs_b = step_logs(a), step_logs(b)
    assert [m["step"] for m in logs_a] == list(range(1, steps + 1))
    assert logs_b == logs_a  # every logged figure of every step: loss, rewards, KL, weights, grad norm, lr
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny assets and the uninterrupted 6-step run."""
    root = tmp_path_factory.mktemp("resume")
    assets = write_tiny_assets(root / "tiny", n=8)
    sgpo(*train_args(assets, root / "straight", "--max_steps", "6"))
    return assets, root / "straight"


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_true_reproduces_the_run(tmp_path, runs):
    assets, straight = runs
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgpo", *train_args(assets, out, "--max_steps", "6")],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (out / "checkpoint-4").is_dir():  # renamed into place only once complete
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "checkpoint-4 never appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()  # killed before the end
    sgpo(*train_args(assets, out, "--max_steps", "6", "--resume_from_checkpoint", "true"))
    assert_same_run(straight, out, 6)


@pytest.mark.slow
def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path, runs):
    # the process kills itself (SIGKILL) inside Hugging Face's save of checkpoint-4, after the model and
    # the optimizer are written and before the RNG states and the trainer state: checkpoint-4 must not
    # exist (it is still in the staging folder) and `last` must pick checkpoint-2
    assets, straight = runs
    out = tmp_path / "killed_while_saving"
    code = (
        "import os, signal, sys\n"
        "from transformers import Trainer\n"
        "save = Trainer._save_rng_state\n"
        "def dying(self, output_dir):\n"
        "    if self.state.global_step == 4:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return save(self, output_dir)\n"
        "Trainer._save_rng_state = dying\n"
        "from sgpo.cli import main\n"
        f"sys.exit(main({train_args(assets, out, '--max_steps', '6')!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    partial = out / ".partial-checkpoints" / "checkpoint-4"
    assert (partial / "model.safetensors").is_file() and not (partial / "trainer_state.json").exists()
    assert not (out / "checkpoint-4").exists() and (out / "checkpoint-2" / "trainer_state.json").is_file()
    sgpo(*train_args(assets, out, "--max_steps", "6", "--resume_from_checkpoint", "last"))
    assert_same_run(straight, out, 6)
    assert not partial.exists()  # the next save of step 4 cleared it


@pytest.mark.slow
def test_a_finished_run_resumed_with_more_steps_does_the_remaining_steps(tmp_path, runs):
    # 4 steps = one whole epoch: the resumed run starts at an epoch boundary; the recipe form of the key
    assets, straight = runs
    out = tmp_path / "extended"
    sgpo(*train_args(assets, out, "--max_steps", "4"))
    assert [m["step"] for m in step_logs(out)] == [1, 2, 3, 4] and (out / "checkpoint-4").is_dir()
    recipe = tmp_path / "resume.yaml"
    recipe.write_text((ROOT / "recipes" / "tiny_cpu.yaml").read_text() + f"resume_from_checkpoint: {out / 'checkpoint-4'}\n")
    args = train_args(assets, out, "--max_steps", "6")
    args[args.index("--config") + 1] = str(recipe)
    sgpo(*args)
    assert_same_run(straight, out, 6)  # steps 5 and 6 done, as in one 6-step run (constant learning rate)


def test_a_half_written_newest_checkpoint_is_skipped(tmp_path, caplog):
    from sgpo.checkpoints import last_complete_checkpoint
    from sgpo.commands.train import RecipeError, resolve_resume

    out = tmp_path / "run"
    for step in (2, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-6").mkdir()  # cut short: weights, no trainer state
    (out / "checkpoint-6" / "model.safetensors").write_bytes(b"")
    assert last_complete_checkpoint(out) == str(out / "checkpoint-4")
    assert "checkpoint-6 is incomplete" in caplog.text
    for value in ("true", "last", True):
        assert resolve_resume(value, str(out)) == str(out / "checkpoint-4")
    with pytest.raises(RecipeError, match="incomplete checkpoint"):
        resolve_resume(str(out / "checkpoint-6"), str(out))


TERM_REWARDS = """
import os, signal

def text_length_reward(prompts, completions, trainer_state, **_):
    # what SLURM / Kubernetes do before they kill a job: SIGTERM, here during the rollout of step 3
    if trainer_state.global_step == 2 and os.environ.get("SGPO_TEST_SIGTERM") == "1":
        os.kill(os.getpid(), signal.SIGTERM)
    return [float(len(c) % 2 == 0) for c in completions]
"""


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_says_where_and_the_resume_reproduces_the_run(tmp_path, runs):
    # the reward function (a file.py:function spec, same name and values as the straight run's) sends
    # SIGTERM to its own process in step 3: the run finishes step 3, saves a complete checkpoint-3,
    # says so and exits 128 + 15; `--resume_from_checkpoint true` names it and ends where the straight run did
    assets, straight = runs
    (tmp_path / "term_rewards.py").write_text(TERM_REWARDS)
    out = tmp_path / "preempted"
    args = train_args(assets, out, "--max_steps", "6")
    args[args.index("conftest:text_length_reward")] = str(tmp_path / "term_rewards.py") + ":text_length_reward"
    proc = subprocess.run(
        [sys.executable, "-m", "sgpo", *args], env=dict(env(), SGPO_TEST_SIGTERM="1"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "sgpo: SIGTERM received: saving a checkpoint at the end of this optimizer step" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"sgpo train: error: SIGTERM received: stopped at step 3 with a complete checkpoint {out / 'checkpoint-3'}; "
        "resume with --resume_from_checkpoint true"
    )
    assert "Traceback" not in proc.stderr
    assert (out / "checkpoint-3" / "trainer_state.json").is_file() and not (out / "model.safetensors").exists()
    assert not (out / ".partial-checkpoints").exists()  # no staging folder left behind
    resumed = sgpo(*args, "--resume_from_checkpoint", "true")
    assert f"sgpo train: resuming from {out / 'checkpoint-3'} (step 3)" in resumed.stdout
    assert_same_run(straight, out, 6)


def test_preemption_signals_are_caught_once_and_the_output_folder_error_suggests_resume_only_with_a_checkpoint(tmp_path):
    from sgpo.checkpoints import OutputDirError, Preemption, previous_run

    p = Preemption()
    p.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert p.received == "SIGUSR1"
    finally:
        p.uninstall()
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None) or not callable(signal.getsignal(signal.SIGUSR1))
    out = tmp_path / "run"
    (out / ".partial-checkpoints").mkdir(parents=True)  # empty: what a finished save leaves is not a run
    assert previous_run(out, overwrite=False) == []
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(OutputDirError) as no_checkpoint:
        previous_run(out, overwrite=False)
    assert "resume" not in str(no_checkpoint.value) and "pick another --output_dir" in str(no_checkpoint.value)
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    with pytest.raises(OutputDirError, match="resume it with --resume_from_checkpoint true"):
        previous_run(out, overwrite=False)
