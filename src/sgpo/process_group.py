"""The life of the process group of a multi-process run (`accelerate launch`), and its clean end.

accelerate creates the group when the training arguments are built (`SGPOConfig.__post_init__`), and
`sgpo train` ends it with `end_process_group` once the model is saved and the trainer is gone (its
DDP wrapper holds the group too). For the end to be clean, the group must be *freed*, not only
unregistered: gloo's worker threads (`pt_gloo_runloop`, and the
transport's `gloo_tcp_loop`) are joined only when the last reference to the group goes. A group
still alive when the interpreter finalizes keeps those threads running into it, and a worker that
then drops the last reference to a tensor owned by Python (the output of the last collective) takes
the GIL from a finalizing interpreter: CPython ends the thread (`PyThread_exit_thread`), the forced
unwind meets a `noexcept` frame, and the finished process aborts with "terminate called without an
active exception" (docs/scaling.md, "A clean exit").

What kept the group alive past `destroy_process_group`: modules that bind `group.WORLD` as a
default argument *when they are first imported*. Imported after the group exists, their defaults hold
it for the rest of the process. DeepSpeed is one (`deepspeed.comm.torch.TorchBackend.barrier` and
`monitored_barrier`): when it is installed, transformers and accelerate import it while the trainer
is built, after `SGPOConfig` created the group. `torch.distributed.nn.functional` (ten collectives)
is another, imported by `torch._dynamo`, which DDP imports. This module is imported by `sgpo.config`,
so importing them here, before any group exists, binds those defaults to None.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os

import torch.distributed as dist

if dist.is_available():
    importlib.import_module("torch.distributed.nn.functional")  # before any group exists: see above
    # DeepSpeed takes half a second to import: only in a process a launcher started (a group is coming)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and importlib.util.find_spec("deepspeed") is not None:
        importlib.import_module("deepspeed.comm.torch")

logger = logging.getLogger(__name__)

GLOO_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop")


def native_thread_names() -> list[str]:
    """Names of this process's native threads (Linux; empty elsewhere)."""
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as fh:
                names.append(fh.read().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(names)


def end_process_group() -> list[str]:
    """Wait for every process, then destroy the group, which joins gloo's threads while the interpreter
    is whole. Call it once nothing else refers to the group (drop the trainer first: its DDP wrapper
    and reducer hold the group; `gc.collect()` frees them, they sit in reference cycles).

    Returns the gloo threads still running afterwards: [] when the group was freed; otherwise a
    warning is logged, as the process may abort at exit."""
    if not dist.is_available() or not dist.is_initialized():
        return []
    from accelerate import PartialState  # the state accelerate created the group in

    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()
    left = [n for n in native_thread_names() if n in GLOO_THREADS]
    if left:
        logger.warning(
            "the process group was destroyed but is still referenced: gloo's threads (%s) run on, and the "
            'process may abort at exit (docs/scaling.md, "A clean exit")',
            ", ".join(left),
        )
    return left
