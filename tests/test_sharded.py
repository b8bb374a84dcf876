"""Sharded training with real processes: the shipped accelerate configs (configs/accelerate/) on 2
CPU processes with gloo — FSDP2 (torch `fully_shard`) and DeepSpeed ZeRO-2 / ZeRO-3 (DeepSpeed's CPU
accelerator). Each run must give the 1-process update: the chunked LM head reads the head's weight
directly, so under sharding it must be gathered the way each engine provides and its gradient must
still be reduced into the shards (`sgpo.sharding`).

The scenario (tests/scripts/one_step_update.py "sharded"): two SGD steps on one generation batch
(num_iterations 2, so the old log-probs and the teacher's LM-head snapshot are taken without
gradient) with a reference model (beta > 0, prepared by TRL's helpers for each engine).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_distributed import env, run_single

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "scripts" / "one_step_update.py"


def require_deepspeed():
    """`make test` installs DeepSpeed and sets SGPO_REQUIRE_DEEPSPEED=1 (a missing one fails there)."""
    if importlib.util.find_spec("deepspeed") is None:
        if os.environ.get("SGPO_REQUIRE_DEEPSPEED") == "1":
            raise RuntimeError("SGPO_REQUIRE_DEEPSPEED=1 but deepspeed is not installed: run `make install`")
        pytest.skip("deepspeed is not installed (`make install` installs it)")


def launch(config: str, out: Path, scenario: str, *extra: str, per_device: str = "2", group_size: str = "0") -> str:
    out.parent.mkdir()
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    e = env()
    e["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's CPU accelerator (gloo); FSDP2 runs on CPU as it is
    cmd = [
        launcher,
        "launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / config),
        *extra,
        "--num_processes",
        "2",
        "--main_process_port",
        "29518",
        str(SCRIPT),
        str(out),
        per_device,
        "dapo",
        scenario,
        group_size,
    ]
    proc = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def assert_same_update(single: Path, sharded: Path) -> None:
    a, b = torch.load(single), torch.load(sharded)
    assert a.keys() == b.keys() and any(v.abs().max() > 0 for v in a.values())
    assert a["lm_head.weight"].abs().max() > 1e-3  # the head moves: its gradient is what is at stake
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0, msg=name)


@pytest.fixture(scope="module")
def single_updates(tmp_path_factory):
    """The 1-process updates of the scenarios (4 problems per step on one process)."""
    root = tmp_path_factory.mktemp("single")
    out = {}
    for scenario in ("sharded", "reuse"):
        run_single(path := root / scenario / "delta.pt", "4", "dapo", scenario)
        out[scenario] = path
    # two optimizer steps of 2 micro-steps × 2 problems, every sequence of a micro-step at once
    run_single(path := root / "accumulate" / "delta.pt", "2", "dapo", "accumulate")
    out["accumulate"] = path
    return out


@pytest.mark.slow
def test_fsdp2_gives_the_single_process_update(tmp_path, single_updates):
    stdout = launch("fsdp2.yaml", out := tmp_path / "fsdp2" / "delta.pt", "sharded", "--mixed_precision", "no")
    assert "processes=2 engine=DistributedType.FSDP" in stdout
    assert_same_update(single_updates["sharded"], out)


@pytest.mark.slow
def test_fsdp2_with_the_head_resharded_after_every_forward(tmp_path, single_updates):
    # the model is sharded before the trainer sees it, the root with reshard_after_forward=True: the
    # LM head is a DTensor when the loss needs it, and must be unsharded through FSDP (a gathered
    # full_tensor() copy would give each process's gradient of its own slice, never reduced)
    stdout = launch(
        "fsdp2.yaml",
        out := tmp_path / "fsdp2" / "delta.pt",
        "reuse_root",
        "--mixed_precision",
        "no",
        "--fsdp_auto_wrap_policy",
        "NO_WRAP",
    )
    assert "processes=2 engine=DistributedType.FSDP" in stdout
    assert_same_update(single_updates["reuse"], out)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_deepspeed_gives_the_single_process_update(tmp_path, single_updates, config):
    require_deepspeed()
    # zero3.yaml reads configs/deepspeed/zero3.json, whose "auto" persistence threshold (10 × hidden
    # size) leaves the tiny model's LM head partitioned: it must be gathered
    extra = ["--mixed_precision", "no"] if config == "zero2.yaml" else []
    stdout = launch(config, out := tmp_path / config / "delta.pt", "sharded", *extra)
    assert "processes=2 engine=DistributedType.DEEPSPEED" in stdout
    assert_same_update(single_updates["sharded"], out)


@pytest.mark.slow
def test_fsdp2_with_backward_groups_gives_the_single_process_update(tmp_path, single_updates):
    # gradient accumulation over 2 micro-steps of 5 sequences, back-propagated 2, 2 and 1 at a time:
    # in the first micro-step under the Trainer's no_sync, in the second under the groups' own
    stdout = launch(
        "fsdp2.yaml",
        out := tmp_path / "fsdp2" / "delta.pt",
        "accumulate",
        "--mixed_precision",
        "no",
        per_device="1",
        group_size="2",
    )
    assert "processes=2 engine=DistributedType.FSDP" in stdout
    assert_same_update(single_updates["accumulate"], out)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_deepspeed_with_backward_groups_gives_the_single_process_update(tmp_path, single_updates, config):
    # every sequence back-propagated on its own, 2 micro-steps per optimizer step: DeepSpeed must see an
    # accumulation boundary (and step) only at the last group of the last micro-step
    require_deepspeed()
    extra = ["--mixed_precision", "no"] if config == "zero2.yaml" else []
    stdout = launch(config, out := tmp_path / config / "delta.pt", "accumulate", *extra, per_device="1", group_size="1")
    assert "processes=2 engine=DistributedType.DEEPSPEED" in stdout
    assert_same_update(single_updates["accumulate"], out)
