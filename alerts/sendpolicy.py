"""How hard to push one destination: retry delays, per-destination send budgets and the destination's name."""

from __future__ import annotations

import hashlib
import random
import time

from wirewatch.records import ChannelSpec
from wirewatch.settings import AlertsSettings


def backoff(attempt: int, s: AlertsSettings, retry_after_s: float | None = None) -> float:
    """Delay before attempt ``attempt + 1``: exponential with full jitter, at least Retry-After."""
    ceiling = min(s.backoff_max_s, s.backoff_initial_s * 2 ** max(0, attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after_s or 0.0)


def destination(spec: ChannelSpec) -> str:
    """A stable, secret-free name for one destination (budgets and concurrency are per destination)."""
    return spec.type.value + ":" + hashlib.sha256(spec.target.encode()).hexdigest()[:16]


class Budget:
    """A token bucket: ``count`` sends per ``per_s`` seconds, bursting up to ``count``."""

    def __init__(self, count: int, per_s: float) -> None:
        self._cap = float(count)
        self._rate = count / per_s
        self._tokens = float(count)
        self._at = time.monotonic()

    def take(self) -> float:
        """Take a token; returns 0 when taken, else the seconds until one is free (nothing taken)."""
        now = time.monotonic()
        self._tokens = min(self._cap, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate
