"""Progress of a long item-by-item job: a rich progress bar (count, rate, ETA, outcome counts) on a
terminal, and one log line every `interval` seconds otherwise (CI logs, `nohup`)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class RunProgress:
    """`advance(outcome)` after each item; `close()` at the end."""

    def __init__(
        self, total: int, *, label: str = "extract", enabled: bool = True, interval: float = 30.0, console: Console | None = None
    ):
        self.total = total
        self.label = label
        self.enabled = enabled and total > 0
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self.done = 0
        self.start = time.monotonic()
        self._last_log = self.start
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        if self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[outcomes]}"),
                console=self.console,
            )
            self._task = self._bar.add_task(label, total=total, rate="", outcomes="")
            self._bar.start()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _outcomes(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))

    def advance(self, outcome: str, n: int = 1) -> None:
        self.done += n
        self.counts[outcome] += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate():.1f} items/s", outcomes=self._outcomes())
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval or self.done == self.total:
            self._last_log = now
            rate = self.rate()
            eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
            print(
                f"{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.1f}%) "
                f"{rate:.1f} items/s ETA {eta} {self._outcomes()}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def report_summary(summary: Any, summary_json: str | None = None) -> None:
    """Print a run summary (its `format()`) to stderr; also write its `to_dict()` as JSON when asked."""
    print(summary.format(), file=sys.stderr)
    if summary_json:
        path = Path(summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary.to_dict(), indent=1) + "\n", encoding="utf-8")
