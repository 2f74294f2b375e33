"""Garbage collection for long-running workers: keep full collections out of the latency path.

CPython's generation-2 collection walks every tracked object. A worker keeps tens of thousands of
long-lived ones (story members with their word sets, cached stories, subscriptions, channels), and one
such pass stops every thread for 40-120 ms, several times a minute at a few hundred matches a second:
that alone is more than the alerts latency budget. So the :class:`HeapKeeper`, after start-up and then
every ``freeze_every_s``, runs a young collection and moves the survivors to the permanent generation
(:func:`gc.freeze`), which collections no longer walk. Frozen objects are still freed by reference
counting as soon as they are dropped; only reference cycles that turn into garbage after being frozen
wait for the periodic full collection (``full_every_s``, one pause an hour by default, logged with its
duration and how much it found).
"""

from __future__ import annotations

import gc
import threading
import time

from wirewatch.log import get_logger

log = get_logger("wirewatch.heap")


class HeapKeeper:
    """Freezes the surviving heap periodically; see the module docstring. ``start``/``stop`` run it."""

    def __init__(self, *, freeze_every_s: float = 5.0, full_every_s: float = 3600.0) -> None:
        self._freeze_every = freeze_every_s
        self._full_every = full_every_s
        self._last_full = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-keeper", daemon=True)

    def start(self) -> HeapKeeper:
        """Collect and freeze what start-up left (imports, settings, clients), then keep freezing."""
        gc.collect()
        gc.freeze()
        self._last_full = time.monotonic()
        log.info("heap_frozen", objects=gc.get_freeze_count())
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop freezing and give the frozen objects back to the collector."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        gc.unfreeze()

    def tick(self, now: float | None = None) -> None:
        """One round: young collection and freeze; the full collection when it is due."""
        now = time.monotonic() if now is None else now
        if now - self._last_full >= self._full_every:
            self.full()
            return
        gc.collect(1)
        gc.freeze()

    def full(self) -> int:
        """Unfreeze, collect everything, freeze again; returns how many unreachable objects were found."""
        started = time.monotonic()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._last_full = time.monotonic()
        log.info("heap_full_collection", unreachable=found, frozen=gc.get_freeze_count(),
                 pause_ms=round((self._last_full - started) * 1000, 1))
        return found

    def _run(self) -> None:
        while not self._stop.wait(self._freeze_every):
            self.tick()
