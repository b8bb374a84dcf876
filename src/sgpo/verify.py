"""Answer checking with `math-verify`, in worker processes with a per-answer deadline.

`math_verify` bounds its own work with `signal.alarm`, which only works on a process's main thread:
called from a worker thread it raises, and a caller that swallows the error scores every answer 0
(other projects did exactly that). So answers are checked in worker *processes*, on their main
thread, with two deadlines per answer:

- a soft one inside the worker (`signal.setitimer`, `timeout` seconds): the check is abandoned, the
  answer scores 0 and is counted as timed out, and the worker carries on with the next answer;
- a hard one in the parent (`timeout + grace` seconds after the answer was handed over): for work
  that never returns to the interpreter (a regex or big-integer operation in C), the worker is
  killed and replaced; the answer scores 0 and is counted as timed out. A worker that dies (crash,
  out-of-memory kill) is replaced the same way and its answer is counted as timed out.

Workers check a few typical answers when they start (math-verify's first use costs about a second)
and only then receive answers, so start-up is never charged to an answer's deadline. The parent never
blocks on a worker for longer than the nearest deadline, so a batch finishes in bounded time whatever
the answers are. Only the extracted final answer (at most
`answers.MAX_ANSWER_CHARS` characters) crosses the process boundary, never the full completion, and
many answers never reach a worker at all: equal after normalisation, both integers, or one of them
empty or absurdly long.

Workers are fresh interpreters started with `subprocess` (`python -c ...`), talking over a socket
pair. Not `multiprocessing`: its `spawn` / `forkserver` children re-run the parent's `__main__`
script, so a training script without an `if __name__ == "__main__":` guard would start verifiers
recursively and never get a worker up; and `fork` copies a multi-threaded trainer (torch's thread
pools) in whatever state its locks are in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as _wait_ready

from sgpo.answers import MAX_ANSWER_CHARS, extract_boxed

logger = logging.getLogger(__name__)

#: seconds the parent waits past `timeout` before it kills a worker that did not answer
HARD_DEADLINE_GRACE = 1.0


@dataclass(frozen=True)
class Check:
    """The verdict on one completion.

    timed_out: the answer could not be judged in time (or its checking process died); it scores 0.
    """

    correct: bool
    extracted: str | None
    timed_out: bool = False


_SPACES = re.compile(r"\s+")
_INTEGER = re.compile(r"[+-]?\d{1,500}")
_NUMBER_TOKEN = re.compile(r"[+-]?\d+(?:\.\d+)?")
_WORD_TOKEN = re.compile(r"[A-Za-z]+")


def normalize_answer(text: str) -> str:
    """Cheap textual normalisation used before the symbolic check (spaces, `$`, `\\left`/`\\right`, `\\!`)."""
    text = text.strip().strip("$").strip()
    for tok in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\displaystyle"):
        text = text.replace(tok, "")
    text = _SPACES.sub("", text)
    if text.startswith("\\text{") and text.endswith("}"):
        text = text[6:-1]
    return text.rstrip(".")


def _is_sequence(text: str) -> bool:
    """'3 7 1' or 'A C B': two or more whitespace-separated numbers, or two or more words (no
    operators, no LaTeX, not a mix such as '2 x')."""
    tokens = text.split()
    if len(tokens) < 2:
        return False
    return all(_NUMBER_TOKEN.fullmatch(t) for t in tokens) or all(_WORD_TOKEN.fullmatch(t) for t in tokens)


def quick_verdict(pred: str | None, gold: str) -> bool | None:
    """The verdicts that need no parser, or None when math-verify has to decide.

    Wrong: no answer, an empty one, or one longer than `MAX_ANSWER_CHARS`. Right: equal after
    `normalize_answer`. Integers are compared as integers. A gold answer that is a whitespace-separated
    sequence of plain tokens ("3 7 1", "A C B") is compared token by token, since math-verify would
    read it as one number or a product.
    """
    if pred is None or len(pred) > MAX_ANSWER_CHARS:
        return False
    if _is_sequence(gold.strip().strip("$")):
        return pred.strip().strip("$").split() == gold.strip().strip("$").split()
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p:
        return False
    if p == g:
        return True
    if _INTEGER.fullmatch(p) and _INTEGER.fullmatch(g):
        return int(p) == int(g)
    return None


class _Deadline(BaseException):
    """Raised by the soft timer. A BaseException, so math-verify's `except Exception` lets it through."""


def _on_deadline(signum, frame):  # noqa: ARG001
    raise _Deadline()


def _quiet_math_verify() -> None:
    # We pass timeouts of None to math-verify (our own timer bounds the whole check, and its alarms
    # would reset ours); it then warns once that it has no timeout. That warning is wrong here.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _math_verify_equal(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def judge(pred: str | None, gold: str, timeout: float) -> tuple[bool, bool]:
    """(correct, timed_out) for one extracted answer, in this process. Must run on the main thread
    (the deadline is a SIGALRM timer); `Verifier` runs it in worker processes."""
    quick = quick_verdict(pred, gold)
    if quick is not None:
        return quick, False
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "math-verify answers can only be checked in-process on the main thread (the timeout is a "
            "SIGALRM timer); use Verifier(num_workers>=1), which checks in worker processes"
        )
    _quiet_math_verify()
    previous = signal.signal(signal.SIGALRM, _on_deadline)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, max(float(timeout), 1e-3))
            return _math_verify_equal(pred, gold), False  # type: ignore[arg-type]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        return False, True
    except (Exception, RecursionError):  # noqa: BLE001 - a parser crash is a wrong answer, not a crashed run
        return False, False
    finally:
        signal.signal(signal.SIGALRM, previous)


def answers_equal(pred: str | None, gold: str, timeout: float = 5) -> bool:
    """True when `pred` and `gold` are the same answer: equal after normalisation, or symbolically
    equal for math-verify (`1/2`, `\\frac{1}{2}`, `0.5`). In-process and main thread only (a timed-out
    check is False); elsewhere use `Verifier`."""
    return judge(pred, gold, timeout)[0]


# ------------------------------------------------------------------------------------------ workers

#: seconds a new worker may take to start and warm up before it counts as failed
WORKER_START_TIMEOUT = 120.0

_WARM_UP = (
    ("\\frac{1}{2}", "0.5"),
    ("(x+1)^2", "x^2+2x+1"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("x=3", "3"),
    ("(1,2]", "(1, 2]"),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
    ("30^\\circ", "30"),
)


def warm_up() -> None:
    """Check a few typical answers once, so that the first-use costs of math-verify and sympy (lazy
    imports, parser set-up: about a second) are not charged to a real answer's deadline."""
    _quiet_math_verify()
    for pred, gold in _WARM_UP:
        try:
            _math_verify_equal(pred, gold)
        except Exception:  # noqa: BLE001 - warming up only
            pass


def _worker_main(conn, warm: bool = True) -> None:
    """A checking process: warms up (`warm`), says "ready", then receives (judge_fn, pred, gold,
    timeout) and answers (correct, timed_out) until it receives None."""
    os.environ["OMP_NUM_THREADS"] = "1"  # no BLAS/OpenMP threads competing with the trainer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if warm:
        warm_up()
    try:
        conn.send("ready")
    except (EOFError, OSError):
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a judge_fn this process cannot import
            try:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            except (EOFError, OSError):
                pass
            return
        if task is None:
            return
        fn, pred, gold, timeout = task
        try:
            correct, timed_out = (fn or judge)(pred, gold, timeout)
            result = (bool(correct), bool(timed_out))
        except BaseException:  # noqa: BLE001 - never let one answer take the worker down
            result = (False, False)
        try:
            conn.send(result)
        except (EOFError, OSError):
            return


def _worker_entry() -> None:
    """Entry point of a worker interpreter: argv = [fd of its end of the socket pair, warm (0/1)]."""
    _worker_main(Connection(int(sys.argv[1])), warm=sys.argv[2] == "1")


class _Worker:
    """One checking process. Not `ready` until it has warmed up; `deadline` is when the parent stops
    waiting for it (its start-up, or the answer it holds)."""

    def __init__(self, warm: bool = True):
        parent, child = socket.socketpair()
        # the parent's import path, as multiprocessing's spawn gives its children (a judge_fn's module)
        code = "import json, sys; sys.path[:] = json.loads(sys.argv[3]); from sgpo.verify import _worker_entry; _worker_entry()"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(child.fileno()), "1" if warm else "0", json.dumps(sys.path)],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                start_new_session=True,  # Ctrl-C in the terminal is the parent's to handle
            )
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.ready = False
        self.task: int | None = None
        self.deadline = time.monotonic() + WORKER_START_TIMEOUT

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.proc.wait(timeout=2)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            self.kill()
        else:
            self.conn.close()


class Verifier:
    """Checks completions against gold answers in `num_workers` processes.

    `timeout` (seconds) bounds each answer; a timed-out answer scores 0 and is counted in
    `num_timeouts`. `num_workers=0` checks in-process (main thread only). Workers start lazily, are
    reused across calls, and are replaced when one is killed; call `close()` (or use as a context
    manager) to stop them. Safe to call from any thread (calls are serialised).

    `judge_fn` replaces the math-verify check for the answers `quick_verdict` does not settle: a
    module-level (picklable) function `(pred, gold, timeout) -> (correct, timed_out)`, run in the
    workers under the same hard deadline. Default: `judge`.
    """

    def __init__(self, num_workers: int | None = None, timeout: float = 5.0, *, judge_fn=None):
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.timeout = float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if judge_fn is not None:
            try:
                pickle.dumps(judge_fn)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"judge_fn must be a module-level function (it is sent to worker processes): {exc}") from None
        self.judge_fn = judge_fn
        self.num_timeouts = 0
        self.num_worker_restarts = 0
        self._workers: list[_Worker] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    # -- worker management -----------------------------------------------------------------------
    def _discard_inherited(self) -> None:
        # a forked copy of this object must not talk to its parent's workers
        if os.getpid() != self._pid:
            self._workers = []
            self._pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            self._discard_inherited()
            for w in self._workers:
                w.stop()
            self._workers = []

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            if os.getpid() == self._pid:
                for w in self._workers:
                    w.kill()
        except Exception:  # noqa: BLE001
            pass

    # -- checking --------------------------------------------------------------------------------
    def check_answers(self, preds: Sequence[str | None], golds: Sequence[str]) -> list[Check]:
        """Verdicts for already-extracted answers (None = no answer)."""
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} answers but {len(golds)} gold answers")
        verdicts: list[tuple[bool, bool] | None] = [None] * len(preds)
        todo = []
        for i, (p, g) in enumerate(zip(preds, golds)):
            quick = quick_verdict(p, str(g))
            if quick is None:
                todo.append(i)
            else:
                verdicts[i] = (quick, False)
        if todo:
            if self.num_workers == 0:
                for i in todo:
                    verdicts[i] = tuple((self.judge_fn or judge)(preds[i], str(golds[i]), self.timeout))
            else:
                with self._lock:
                    self._run_in_workers(todo, preds, golds, verdicts)
        out = [Check(correct, p, timed_out) for p, (correct, timed_out) in zip(preds, verdicts)]  # type: ignore[misc]
        with self._lock:
            self.num_timeouts += sum(c.timed_out for c in out)
        return out

    def check(self, completions: Sequence[str], golds: Sequence[str]) -> list[Check]:
        """Verdicts for completions: the last `\\boxed{}` of each is compared with its gold answer."""
        return self.check_answers([extract_boxed(c) for c in completions], golds)

    def _run_in_workers(self, todo, preds, golds, verdicts) -> None:
        self._discard_inherited()
        queue = deque(todo)
        failed_starts = 0
        while queue or any(w.task is not None for w in self._workers):
            # as many workers as there is work for (new ones warm up while the others check)
            busy = sum(w.task is not None for w in self._workers)
            while len(self._workers) < min(self.num_workers, len(queue) + busy):
                self._workers.append(_Worker(warm=self.judge_fn is None))  # a custom judge needs no warm-up
            # hand answers to ready, idle workers; the deadline runs from the hand-over
            for w in list(self._workers):
                if queue and w.ready and w.task is None:
                    i = queue.popleft()
                    try:
                        w.conn.send((self.judge_fn, preds[i], str(golds[i]), self.timeout))
                    except (OSError, EOFError):  # it died while idle: replace it, retry the answer
                        queue.appendleft(i)
                        self._drop(w)
                        continue
                    w.task, w.deadline = i, time.monotonic() + self.timeout + HARD_DEADLINE_GRACE
            waiting = [w for w in self._workers if w.task is not None or not w.ready]
            if not waiting:
                continue
            wait_for = max(0.0, min(w.deadline for w in waiting) - time.monotonic())
            answered = set(_wait_ready([w.conn for w in waiting], timeout=wait_for))
            now = time.monotonic()
            for w in waiting:
                if w.conn in answered:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None  # the process died
                    if not w.ready:
                        if msg == "ready":
                            w.ready, w.deadline, failed_starts = True, math.inf, 0
                        else:
                            failed_starts += 1
                            self._drop(w)
                    elif msg is None:
                        logger.warning("a verifier worker died (exit code %s) on answer %d; scored 0", w.exitcode, w.task)
                        verdicts[w.task] = (False, True)
                        self._drop(w)
                    elif msg[0] == "error":
                        for x in list(self._workers):  # leave no worker holding a task
                            self._drop(x)
                        raise RuntimeError(
                            f"a verifier worker could not read its task ({msg[1]}); a judge_fn "
                            "must be a module-level function of an importable module"
                        )
                    else:
                        verdicts[w.task], w.task = tuple(msg), None
                elif w.deadline <= now:
                    if not w.ready:
                        failed_starts += 1
                    else:
                        logger.warning(
                            "answer %d was not judged within %.1fs; its worker is replaced; scored 0",
                            w.task,
                            self.timeout + HARD_DEADLINE_GRACE,
                        )
                        verdicts[w.task] = (False, True)
                    self._drop(w)
            if failed_starts >= 3:
                for x in list(self._workers):
                    self._drop(x)
                raise RuntimeError(
                    f"answer-checking worker processes failed to start {failed_starts} times in a row "
                    f"(each gets {WORKER_START_TIMEOUT:.0f}s to import math-verify and warm up)"
                )

    def _drop(self, w: _Worker) -> None:
        w.kill()
        self._workers.remove(w)
        self.num_worker_restarts += 1


_default: Verifier | None = None


def default_verifier() -> Verifier:
    """A process-wide verifier shared by reward functions (created on first use)."""
    global _default
    if _default is None:
        _default = Verifier()
    return _default
