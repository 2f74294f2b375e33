"""How hard to push one destination: retry delays, send budgets, its name and the line of entries waiting for it."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import deque

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


class WaitLine:
    """Outbox keys held back by their destination's limits, in arrival order per destination. Thread-safe.

    A key taken with :meth:`next` and held back again goes back to the front, so a destination's entries
    keep their order while they wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: dict[str, deque[str]] = {}
        self._keys: set[str] = set()
        self._taken: set[str] = set()

    def add(self, dest: str, key: str) -> None:
        """Queue ``key`` for ``dest`` (once)."""
        with self._lock:
            if key in self._keys:
                return
            self._keys.add(key)
            line = self._lines.setdefault(dest, deque())
            if key in self._taken:
                self._taken.discard(key)
                line.appendleft(key)
            else:
                line.append(key)

    def next(self, dest: str) -> str | None:
        """The longest-waiting key of ``dest``, taken out of the line; None when none waits."""
        with self._lock:
            line = self._lines.get(dest)
            if not line:
                self._lines.pop(dest, None)
                return None
            key = line.popleft()
            self._keys.discard(key)
            if len(self._taken) > 100_000:  # keys taken and sent never come back to clear their mark
                self._taken.clear()
            self._taken.add(key)
            return key

    def destinations(self) -> list[str]:
        """Destinations with keys waiting."""
        with self._lock:
            return [d for d, line in self._lines.items() if line]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
