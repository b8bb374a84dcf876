"""Progress of the pipeline's stages: a rich bar per stage on a terminal; elsewhere (a pipe, a log
file, CI) plain lines on stderr — one when a stage starts, one when it ends (with its time), and one
at least every `interval` seconds in between, so a long stage never looks hung.

    with StageProgress() as progress:
        with progress.stage("warm-up", total=900) as advance:
            for step in ...: advance(step + 1)

Stages may overlap (the two training runs go side by side): `begin` / `update` / `end` address a
stage by name, and `stage` is the context manager around them.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import TextIO


class StageProgress:
    """`enabled=False` shows nothing. `terminal` (default: whether `stream` is one) picks bars or
    lines; `interval` is the longest silence between two lines. A background thread calls `tick()`
    once a second, so a line comes also while a stage does not report."""

    def __init__(
        self, enabled: bool = True, *, stream: TextIO | None = None, terminal: bool | None = None, interval: float = 30.0
    ):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.interval = interval
        self.start = time.monotonic()
        self._bars = None
        self._tasks: dict[str, int] = {}
        self._running: dict[str, dict] = {}  # name -> done, total, start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_line = self.start

    def __enter__(self) -> StageProgress:
        if not self.enabled:
            return self
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bars = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bars.__enter__()
        else:
            self._thread = threading.Thread(target=self._run_ticker, name="stage-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bars is not None:
            self._bars.__exit__(*exc)

    def _run_ticker(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    def _line(self, text: str, now: float) -> None:
        self._last_line = now
        print(f"[{now - self.start:6.1f} s] {text}", file=self.stream, flush=True)

    def begin(self, name: str, total: int = 1) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            self._running[name] = {"done": 0, "total": total, "start": now}
            if self._bars is not None:
                self._tasks[name] = self._bars.add_task(name, total=total)
            else:
                self._line(f"{name}: started", now)

    def update(self, name: str, done: int) -> None:
        if not self.enabled or name not in self._running:
            return
        self._running[name]["done"] = done
        if self._bars is not None:
            self._bars.update(self._tasks[name], completed=done)
        else:
            self.tick()

    def end(self, name: str, finished: bool = True) -> None:
        if not self.enabled or name not in self._running:
            return
        with self._lock:
            now = time.monotonic()
            stage = self._running.pop(name)
            if self._bars is not None:
                if finished:
                    self._bars.update(self._tasks[name], completed=stage["total"])
            else:
                self._line(f"{name}: {'done in' if finished else 'stopped after'} {now - stage['start']:.1f} s", now)

    def tick(self, now: float | None = None) -> None:
        """Print where each running stage is when nothing was printed for `interval` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._running or now - self._last_line < self.interval:
                return
            for name, s in self._running.items():
                self._line(f"{name}: {s['done']}/{s['total']}, {now - s['start']:.0f} s so far", now)

    @contextmanager
    def stage(self, name: str, total: int = 1):
        """`begin(name, total)`, yield `advance(done)`, then `end(name)` (marked stopped on an error)."""
        self.begin(name, total)
        finished = False
        try:
            yield lambda done: self.update(name, done)
            finished = True
        finally:
            self.end(name, finished)
