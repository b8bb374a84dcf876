"""Answer checking with `math-verify`, in a process pool with a per-answer timeout.

`math_verify` bounds its own work with `signal.alarm`, which only works on a process's main thread;
called from a worker thread it silently does nothing, and called from a trainer it can hang on a
pathological answer. So answers are checked in worker *processes* (whose tasks run on their main
thread), each answer gets a hard wall-clock deadline enforced by the parent, and a worker that
overruns is killed and the pool restarted. A timed-out answer scores 0 and is counted.

Only the extracted final answer (at most `answers.MAX_ANSWER_CHARS` characters) crosses the process
boundary, never the full completion, so megabytes of model output cost a linear scan and nothing more.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sgpo.answers import extract_boxed


@dataclass(frozen=True)
class Check:
    """The verdict on one completion."""

    correct: bool
    extracted: str | None
    timed_out: bool = False


_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Cheap textual normalisation used before the symbolic check (spaces, `$`, `\\left`/`\\right`, `\\!`)."""
    text = text.strip().strip("$").strip()
    for tok in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\displaystyle"):
        text = text.replace(tok, "")
    text = _SPACES.sub("", text)
    if text.startswith("\\text{") and text.endswith("}"):
        text = text[6:-1]
    return text.rstrip(".")


def _symbolic_equal(pred: str, gold: str, timeout: int) -> bool:
    """Runs inside a worker process (main thread), where math_verify's signal-based timeout works."""
    from math_verify import parse, verify

    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def answers_equal(pred: str | None, gold: str, timeout: int = 5) -> bool:
    """True when `pred` and `gold` are the same answer: equal after normalisation, or symbolically
    equal for math-verify (`1/2`, `\\frac{1}{2}`, `0.5`). In-process: use `Verifier` off the main thread."""
    if pred is None:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p:
        return False
    if p == g:
        return True
    # Whitespace-separated sequences ("3 7 1") are compared as text: math-verify would read them as a sum.
    if " " in pred.strip() and " " in gold.strip():
        return False
    try:
        return _symbolic_equal(pred, gold, timeout)
    except Exception:  # noqa: BLE001 - a parser crash is a wrong answer, not a crashed run
        return False


def _worker_init() -> None:
    # Workers must not compete with the trainer for cores through BLAS/OpenMP threads.
    os.environ["OMP_NUM_THREADS"] = "1"


class Verifier:
    """Checks completions against gold answers in a pool of `num_workers` processes.

    `timeout` (seconds) bounds each answer; `num_workers=0` checks in-process (only safe on the main
    thread). The pool is created lazily and reused; call `close()` (or use as a context manager).
    """

    def __init__(self, num_workers: int | None = None, timeout: float = 5.0):
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.timeout = float(timeout)
        self.num_timeouts = 0
        self._pool = None
        self._lock = threading.Lock()

    # -- pool management -------------------------------------------------------------------------
    def _ensure_pool(self):
        if self._pool is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["sgpo.verify", "math_verify"])
            self._pool = ctx.Pool(self.num_workers, initializer=_worker_init)
        return self._pool

    def _kill_pool(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool.join()
                self._pool = None

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self._kill_pool()
        except Exception:  # noqa: BLE001
            pass

    # -- checking --------------------------------------------------------------------------------
    def check_answers(self, preds: Sequence[str | None], golds: Sequence[str]) -> list[Check]:
        """Verdicts for already-extracted answers (None = no answer)."""
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} answers but {len(golds)} gold answers")
        results: list[Check | None] = [None] * len(preds)
        todo = []
        for i, (p, g) in enumerate(zip(preds, golds)):
            if p is None or not normalize_answer(p):
                results[i] = Check(False, p)
            elif normalize_answer(p) == normalize_answer(g):
                results[i] = Check(True, p)
            else:
                todo.append(i)
        if not todo:
            return results  # type: ignore[return-value]
        inner = max(1, int(self.timeout))
        if self.num_workers == 0:
            for i in todo:
                results[i] = Check(answers_equal(preds[i], golds[i], inner), preds[i])
            return results  # type: ignore[return-value]
        with self._lock:
            pending = todo
            while pending:
                pool = self._ensure_pool()
                jobs = {i: pool.apply_async(answers_equal, (preds[i], golds[i], inner)) for i in pending}
                retry: list[int] = []
                for k, i in enumerate(pending):
                    try:
                        results[i] = Check(bool(jobs[i].get(timeout=self.timeout + 1.0)), preds[i])
                    except mp.TimeoutError:
                        results[i] = Check(False, preds[i], timed_out=True)
                        self.num_timeouts += 1
                        # keep what already finished, kill the stuck worker, resubmit the rest
                        for j in pending[k + 1 :]:
                            if jobs[j].ready():
                                results[j] = Check(bool(jobs[j].get()), preds[j])
                            else:
                                retry.append(j)
                        self._kill_pool()
                        break
                pending = retry
        return results  # type: ignore[return-value]

    def check(self, completions: Sequence[str], golds: Sequence[str]) -> list[Check]:
        """Verdicts for completions: the last `\\boxed{}` of each is compared with its gold answer."""
        return self.check_answers([extract_boxed(c) for c in completions], golds)


_default: Verifier | None = None


def default_verifier() -> Verifier:
    """A process-wide verifier shared by reward functions (created on first use)."""
    global _default
    if _default is None:
        _default = Verifier()
    return _default
