"""Retry timing for remote extractors: exponential backoff with jitter, and the server's Retry-After."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before retrying a failed request.

    Attempt `n` (0-based: the wait after the first failure is attempt 0) waits a uniformly random time
    in `[b/2, b]` with `b = min(cap, base * 2**n)` ("equal jitter": spreads the retries of many workers
    while keeping the exponential growth). When the server sent `Retry-After`, the wait is at least
    that long; a server asking for more than `max_retry_after` seconds ends the item instead."""

    max_retries: int = 5
    base: float = 1.0
    cap: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        bound = min(self.cap, self.base * (2.0**attempt))
        jittered = bound * (0.5 + 0.5 * (rng or random).random())
        if retry_after is not None:
            return max(jittered, retry_after)
        return jittered


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (milliseconds), or `Retry-After` as seconds or as an HTTP
    date; None when absent or unreadable. Negative values (a date in the past) give 0."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
