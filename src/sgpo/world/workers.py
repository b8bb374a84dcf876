"""Processes of a strategy-world run: determinism, and running stages side by side.

Every process computes with a fixed number of torch threads (`set_determinism`), whatever the
machine's core count, so the numbers depend only on the seed, the configuration, the installed
versions and the processor's instruction set (`numerics`; docs/strategy-world.md, "Determinism").
`run_in_workers` runs calls in fresh (spawned) processes and relays their progress to the parent;
on Linux they end with it, however it ends.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import platform
import queue as queue_lib
import random
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from importlib.metadata import version
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from sgpo.world.progress import StageProgress


def set_determinism(seed: int, threads: int) -> dict[str, Any]:
    """Seed Python and torch, use deterministic kernels and `threads` torch threads (a matrix
    product's summation order, and so the last bits of every number, depend on the thread count).
    Returns what else the numbers depend on: versions and the CPU code path (`numerics`)."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    return numerics()


def numerics() -> dict[str, Any]:
    """The versions and CPU code path this process computes with: with the same seed, config and
    these values, a run gives the same numbers bit for bit (docs/strategy-world.md, "Determinism")."""
    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # ATen's kernels: AVX512, AVX2, ...
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # MKL's code path, unset: chosen per processor
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **{pkg: version(pkg) for pkg in ("torch", "transformers", "tokenizers", "accelerate", "trl")},
    }


class _QueueProgress:
    """The `StageProgress` calls of a worker process, sent to the parent (`run_in_workers`)."""

    def __init__(self, queue):
        self.queue = queue

    def begin(self, name: str, total: int = 1) -> None:
        self.queue.put(("begin", name, total))

    def update(self, name: str, done: int) -> None:
        self.queue.put(("update", name, done))

    def end(self, name: str, finished: bool = True) -> None:
        self.queue.put(("end", name, finished))

    stage = StageProgress.stage


_worker_queue = None
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(queue) -> None:
    global _worker_queue
    _worker_queue = queue
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it ends, however it ends (a
    `kill` of `sgpo experiment` would otherwise leave its workers training on, into folders a rerun
    then removes). A run a worker leaves half-done is in its `.tmp` folder, which a rerun redoes."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl: workers outlive a killed parent, as elsewhere
        return
    if os.getppid() != parent:  # the parent ended before the request: end now
        os._exit(1)


def _call_in_worker(fn, args, kwargs):
    hf_logging.disable_progress_bar()  # the parent shows the progress
    return fn(*args, **kwargs, progress=_QueueProgress(_worker_queue))


def run_in_workers(
    calls: Sequence[tuple[Callable, tuple, dict]], on_message: Callable[[str, str, Any], None], processes: int | None = None
) -> list[Any]:
    """`fn(*args, **kwargs, progress=...)` for each call at once, one fresh process each (spawned, so
    each sets its torch threads before anything is computed) — or, with `processes`, in that many
    processes, each taking the next call when it finishes one; returns their results in order. Their
    `progress.begin/update/end(name, x)` calls arrive here as `on_message(kind, name, x)`. An error
    in one is raised here, with the worker's traceback, once all have stopped."""
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()

    def relay() -> None:
        while True:
            try:
                on_message(*messages.get(timeout=0.05))
            except queue_lib.Empty:
                return

    with ProcessPoolExecutor(processes or len(calls), mp_context=ctx, initializer=_init_worker, initargs=(messages,)) as pool:
        futures = [pool.submit(_call_in_worker, fn, args, kwargs) for fn, args, kwargs in calls]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.5)
            relay()
    relay()
    return [f.result() for f in futures]
