"""Multi-process training with real processes: `accelerate launch --cpu --num_processes 2` (gloo)."""

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


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["dapo"])
def test_two_processes_give_the_single_process_update(tmp_path, loss_type):
    single = tmp_path / "single" / "delta.pt"
    single.parent.mkdir()
    subprocess.run([sys.executable, str(SCRIPT), str(single), "4", loss_type], check=True, env=env(), capture_output=True, timeout=300)

    ddp = tmp_path / "ddp" / "delta.pt"
    ddp.parent.mkdir()
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    # `--cpu` makes accelerate use its single-process launcher; `--multi_gpu` starts torchrun, and the
    # script's `use_cpu=True` then selects MULTI_CPU with the gloo backend.
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "29517", str(SCRIPT), str(ddp), "2", loss_type]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "processes=2" in proc.stdout

    a, b = torch.load(single), torch.load(ddp)
    assert any(v.abs().max() > 0 for v in a.values())
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
