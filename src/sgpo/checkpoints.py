"""A run's output folder: what it may hold, how checkpoints are written whole, what a resume reads.

- Output folder policy (`previous_run`, `prepare_run_folder`): a fresh run refuses a folder that
  holds another run (`OutputDirError`) unless told to overwrite it; a resumed run keeps the metrics
  up to its step; the resolved settings are written to `config.yaml`.
- Staged save (`staging_folder`, `publish_checkpoint`): `SGPOTrainer` writes each checkpoint into
  `OUTPUT_DIR/.partial-checkpoints/checkpoint-N` and renames it to `OUTPUT_DIR/checkpoint-N` once
  every process has written its part, so a run killed while saving leaves the earlier checkpoints
  usable and never a half-written `checkpoint-N`.
- Resume state (`resume_path`, `STATE_FILE`, `BUFFER_FILE`): `last_complete_checkpoint` is what
  `--resume_from_checkpoint true` / `last` means; a checkpoint also holds the instance-weight EMA
  and, inside a generation period, each process's rollout buffer.
- Preemption (`Preemption`, `TrainingPreempted`): SIGTERM or SIGUSR1 (what SLURM and Kubernetes send
  before they kill a job) stops training at the end of the optimizer step under way, with a complete
  checkpoint; the run then ends with exit status 128 + the signal's number, naming the checkpoint.

Torch-free: `sgpo train` checks the resume folder before anything heavy loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch
import yaml

logger = logging.getLogger(__name__)

STAGING_DIR = ".partial-checkpoints"  # a checkpoint is written here, then renamed into place whole
COMPLETE_MARKER = "trainer_state.json"  # the last file Hugging Face's Trainer writes into a checkpoint
STATE_FILE = "sgpo_state.json"  # the instance-weight EMA of a checkpoint
BUFFER_FILE = "rollout_buffer_rank{rank}.pt"  # a checkpoint taken inside a generation period keeps its rollouts
CONFIG_FILE = "config.yaml"  # the resolved settings of a run
METRICS_FILE = "metrics.jsonl"
RUN_ARTIFACTS = (METRICS_FILE, COMPLETE_MARKER, "model.safetensors", "adapter_model.safetensors")
EVAL_DIR = "eval"  # `sgpo eval`'s results of the folder's model: removed with the weights they describe
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class OutputDirError(FileExistsError, ValueError):
    """The output folder holds another run (or other files) and the new one would mix with it."""


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` folder of `output_dir` that is complete (holds `trainer_state.json`),
    or None. Newer incomplete ones (a copy cut short, a checkpoint of another tool killed while it was
    written) are skipped with a warning."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name)))
    for _, folder in reversed(found):
        if (folder / COMPLETE_MARKER).is_file():
            return str(folder)
        logger.warning("%s is incomplete (no %s): skipped", folder, COMPLETE_MARKER)
    return None


def resume_path(value: str | bool, output_dir: str | Path) -> str:
    """The checkpoint folder `resume_from_checkpoint=value` means: True → the last complete one of
    `output_dir` (ValueError when there is none), else `value` itself."""
    if value is True:
        path = last_complete_checkpoint(output_dir)
        if path is None:
            raise ValueError(f"resume_from_checkpoint=True but {output_dir} holds no checkpoint")
        return path
    return str(value)


def read_state(checkpoint: str | Path) -> dict[str, Any] | None:
    """The SGPO state a checkpoint holds beside Hugging Face's (`STATE_FILE`), or None."""
    path = Path(checkpoint) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_state(folder: Path, instance_weight_ema: dict[str, Any]) -> None:
    (folder / STATE_FILE).write_text(json.dumps({"instance_weight_ema": instance_weight_ema}))


def write_rollout_buffer(folder: Path, buffer: list[Any], rank: int) -> None:
    """This process's rollouts of the current generation period (micro-batches), kept on CPU."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save([mb.to("cpu") for mb in buffer], folder / BUFFER_FILE.format(rank=rank))


def read_rollout_buffer(checkpoint: str | Path, rank: int, device: Any) -> list[Any] | None:
    """The rollouts `write_rollout_buffer` kept for process `rank`, on `device`; None if there are none."""
    path = Path(checkpoint) / BUFFER_FILE.format(rank=rank)
    return [mb.to(device) for mb in torch.load(path, weights_only=False)] if path.exists() else None


def previous_run(out: Path, overwrite: bool) -> list[str]:
    """What another run left in `out` (checkpoints, metrics, weights, a staging folder): raises
    `OutputDirError` when there is any, unless `overwrite` (then they are returned, to be removed)."""
    staging = out / STAGING_DIR
    previous = sorted(p.name for p in out.glob("checkpoint-*")) + [n for n in RUN_ARTIFACTS if (out / n).exists()]
    previous += [STAGING_DIR] if staging.is_dir() and any(staging.iterdir()) else []
    if previous and not overwrite:
        resume = "resume it with --resume_from_checkpoint true, " if last_complete_checkpoint(out) is not None else ""
        raise OutputDirError(
            f"output_dir {out} already holds a run ({', '.join(previous[:3])}{', …' if len(previous) > 3 else ''}): "
            f"{resume}pick another --output_dir, or pass --overwrite_output_dir"
        )
    # the evaluations of the weights about to be replaced would be stale (sgpo report would mix them in)
    return previous + ([EVAL_DIR] if previous and (out / EVAL_DIR).is_dir() else [])


def prepare_run_folder(out: Path, previous: list[str], resume: str | None, config: dict[str, Any]) -> None:
    """(Main process.) Remove `previous` (`previous_run`) and any staging folder left by a run killed
    while saving, keep the metrics of a resumed run up to its checkpoint's step, create `out` and write
    `config` to `config.yaml`."""
    for name in previous:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if previous:
        logger.warning("overwrite_output_dir: removed %s from %s", ", ".join(previous), out)
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)  # what a run killed while saving left: never a whole checkpoint
    metrics = out / METRICS_FILE
    if resume is not None and metrics.exists():
        step = json.loads((Path(resume) / COMPLETE_MARKER).read_text()).get("global_step", 0)
        kept = [line for line in metrics.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        metrics.write_text("".join(line + "\n" for line in kept))
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def staging_folder(run_dir: Path, name: str, main_process: bool) -> Path:
    """The staging folder `checkpoint-N` is written under, emptied of what a run killed while saving left."""
    staging = run_dir / STAGING_DIR
    if main_process and (staging / name).exists():
        shutil.rmtree(staging / name)
    return staging


def publish_checkpoint(run_dir: Path, name: str, save_total_limit: int | None, best_model_checkpoint: str | None) -> None:
    """(Main process, once every process has written its part.) Rename the staged `name` into
    `run_dir`, replacing an older one of that name, then keep at most `save_total_limit` checkpoints."""
    from transformers.trainer_utils import rotate_checkpoints

    target = run_dir / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(run_dir / STAGING_DIR / name, target)
    try:
        (run_dir / STAGING_DIR).rmdir()  # empty once its checkpoint is in place: leave no empty folder behind
    except OSError:
        pass
    rotate_checkpoints(
        output_dir=str(run_dir), save_total_limit=save_total_limit, best_model_checkpoint=best_model_checkpoint, use_mtime=True
    )


class TrainingPreempted(RuntimeError):
    """Training stopped on a preemption signal after saving `checkpoint`; `exit_code` is 128 + the signal's number."""

    def __init__(self, signal_name: str, checkpoint: str, step: int):
        self.signal_name, self.checkpoint, self.step = signal_name, checkpoint, step
        self.exit_code = 128 + int(getattr(signal, signal_name))
        super().__init__(
            f"{signal_name} received: stopped at step {step} with a complete checkpoint {checkpoint}; "
            "resume with --resume_from_checkpoint true"
        )


class Preemption:
    """The preemption signals of a training run: the first SIGTERM or SIGUSR1 is recorded (`received`)
    and said in one line; the trainer stops at the end of the optimizer step under way with a
    checkpoint. A second one ends the process at once (the signal's default action)."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch the signals (the main thread only can; elsewhere nothing is caught)."""
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:  # asked twice: do what the signal does by default
            self.uninstall()
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        self.received = signal.Signals(number).name
        print(
            f"sgpo: {self.received} received: saving a checkpoint at the end of this optimizer step", file=sys.stderr, flush=True
        )
