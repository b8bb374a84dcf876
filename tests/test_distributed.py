"""Multi-process training with real processes: `accelerate launch --cpu --num_processes 2` (gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "one_step_update.py"


def env():
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", MASTER_PORT="0")
    e["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), e.get("PYTHONPATH", "")])
    return e


def run_single(out: Path, *args: str) -> None:
    out.parent.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), *args], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def run_two_processes(out: Path, *args: str) -> None:
    out.parent.mkdir()
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    # `--cpu` makes accelerate use its single-process launcher; `--multi_gpu` starts torchrun, and the
    # script's `use_cpu=True` then selects MULTI_CPU with the gloo backend.
    cmd = [
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        str(SCRIPT),
        str(out),
        *args,
    ]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "processes=2" in proc.stdout
    # both processes freed the group before exit, so gloo's threads were joined while the interpreter
    # was whole: a group that outlives destroy_process_group keeps them running into its finalization,
    # where they can abort the finished process (sgpo.process_group)
    assert proc.stdout.count("gloo threads after the group ended: []") == 2, proc.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["plain", "masked"])
def test_two_processes_give_the_single_process_update(tmp_path, scenario):
    # "masked": every completion of the first process's problems is truncated and masked, so its
    # micro-batch has nothing to train on; it must contribute a zero gradient, not crash or hang
    run_single(single := tmp_path / "single" / "delta.pt", "4", "dapo", scenario)
    run_two_processes(ddp := tmp_path / "ddp" / "delta.pt", "2", "dapo", scenario)
    a, b = torch.load(single), torch.load(ddp)
    assert any(v.abs().max() > 0 for v in a.values())
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_instance_weight_ema_is_global_and_survives_resume(tmp_path):
    # with a shuffled order a problem lands on different processes in different epochs: the EMA must
    # still be one history per problem, the same on every process, equal to the 1-process run's, and
    # the same again after resuming from a checkpoint
    run_single(single := tmp_path / "single" / "ema", "4", "dapo", "ema")
    run_two_processes(ddp := tmp_path / "ddp" / "ema", "2", "dapo", "ema")
    reference = json.loads(Path(f"{single}.straight.rank0.json").read_text())
    assert len(reference) == 8 and len(set(reference.values())) > 1  # every problem seen, values differ
    for name in ("straight", "resumed"):
        assert json.loads(Path(f"{single}.{name}.rank0.json").read_text()) == pytest.approx(reference)
        for rank in (0, 1):
            assert json.loads(Path(f"{ddp}.{name}.rank{rank}.json").read_text()) == pytest.approx(reference), (name, rank)


@pytest.mark.slow
def test_sgpo_train_on_two_processes_ends_its_process_group(tmp_path):
    # the CLI under `accelerate launch`: both processes train, the main one saves, and each frees the
    # process group before the interpreter exits (no "the process group was destroyed but is still
    # referenced" warning: gloo's threads were joined)
    from sgpo.testing import main as build_tiny_run

    build_tiny_run([str(tmp_path / "tiny")])
    recipe = Path(__file__).parents[1] / "recipes" / "tiny_cpu.yaml"
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    cmd = [
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29518",
        "-m",
        "sgpo",
        "train",
        "--config",
        str(recipe),
        "--model_name_or_path",
        str(tmp_path / "tiny" / "model"),
        "--dataset_name",
        str(tmp_path / "tiny" / "train.jsonl"),
        "--output_dir",
        str(tmp_path / "run"),
        "--use_cpu",
        "true",
        "--max_steps",
        "2",
        "--report_to",
        "none",
    ]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "saved to" in proc.stdout and (tmp_path / "run" / "model.safetensors").is_file()
    assert "still referenced" not in proc.stderr, proc.stderr[-4000:]


@pytest.mark.slow
def test_two_processes_with_backward_groups_give_the_single_process_update(tmp_path):
    # DDP with gradient accumulation: each micro-step's 5 sequences go through forward + backward one
    # at a time (the first four under no_sync, the micro-step's last one reduced by the Trainer's
    # backward); the 1-process run takes every sequence of a micro-step at once
    run_single(single := tmp_path / "single" / "delta.pt", "2", "dapo", "accumulate")
    run_two_processes(ddp := tmp_path / "ddp" / "delta.pt", "1", "dapo", "accumulate", "1")
    a, b = torch.load(single), torch.load(ddp)
    assert any(v.abs().max() > 0 for v in a.values())
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
