"""Garbage collection for long-running workers: keep full collections out of the latency path.

CPython's generation-2 collection walks every tracked object. A worker keeps tens of thousands of
long-lived ones (the model's and libraries' objects from start-up, story members, cached stories,
subscriptions, channels), and one such pass stops every thread for 40-120 ms, several times a minute at a
few hundred matches a second: that alone is more than the alerts latency budget. So the
:class:`HeapKeeper` moves what start-up left, and then every ``freeze_every_s`` (5 s) what survived since, to
the permanent generation (:func:`gc.freeze`), which collections no longer walk. Before each freeze it
collects what is not frozen yet: the survivors of the last ``freeze_every_s`` only, so garbage that was
already out of the young generations is not frozen with them, and the pause stays that of a few seconds'
survivors. ``python -m bench.soak.pauses`` (2 cores at load average 11-13 from other work): with a worker's
start-up heap frozen (93,924 objects), 5 s of what alerts keeps at 200 matches/s (7,005 objects) take 12 ms
to collect, 60 s of it (84,001) 314 ms, and a full pass 250-450 ms; so the interval stays short.

Frozen objects are still freed by reference counting as soon as they are dropped; a reference cycle that
turns into garbage after being frozen waits for the full collection every ``full_every_s``. Workers make such
cycles all the time (a Kafka request's future, its timeout error and the frames its traceback holds, alive
for a few seconds): a full collection 7 minutes into bench.soak found 8,523 frozen unreachable objects in
classify and 5,421 in alerts, and with one full collection an hour, as this module first had, that garbage
was part of RSS growing about half a MiB a minute. The full collection now runs every 10 minutes: one pause
of a full pass per 10 minutes delays the matches of that moment, well under 0.1 % of the 120,000 that 10
minutes bring at 200 matches/s (outside the p99 the alerts budget is written for), and frozen garbage never
holds more than 10 minutes' worth.

Every ``report_every_s`` (60 s) the keeper logs ``heap_frozen``: the rounds, their longest pause and what they
found, and the count and longest of the collector's own pauses by generation (:data:`gc.callbacks`);
``heap_full_collection`` logs each full pass's pause and how much it found.

Set ``WIREWATCH_HEAP_TRACE`` to a directory to have each keeper write ``heap-<pid>.jsonl`` there: every
``WIREWATCH_HEAP_TRACE_EVERY_S`` (60) seconds the RSS, the collector's counts, the tracked objects by type
that grew most since ``WIREWATCH_HEAP_TRACE_BASE_AT_S`` (300) and, unless ``WIREWATCH_HEAP_TRACE_FRAMES`` is
0, the allocation sites that grew most (tracemalloc); and once, after ``WIREWATCH_HEAP_TRACE_FULL_AT_S``
(unset: never), a full collection that keeps what it found and counts it by type. A debugging aid:
tracemalloc costs CPU and memory.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from wirewatch.log import get_logger

log = get_logger("wirewatch.heap")


class Pauses:
    """The collector's pauses by generation, from :data:`gc.callbacks`: count and longest since ``take``."""

    def __init__(self) -> None:
        self._started = 0.0
        self.count = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The :data:`gc.callbacks` hook: ``start`` and ``stop`` of each collection."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        g = info["generation"]
        self.count[g] += 1
        self.longest_ms[g] = max(self.longest_ms[g], (time.perf_counter() - self._started) * 1000)

    def take(self) -> dict[str, Any]:
        """The figures since the last call, as log fields; starts counting again."""
        out = {"collections": list(self.count), "longest_ms": [round(v, 1) for v in self.longest_ms]}
        self.count, self.longest_ms = [0, 0, 0], [0.0, 0.0, 0.0]
        return out


class HeapKeeper:
    """Freezes the surviving heap periodically; see the module docstring. ``start``/``stop`` run it."""

    def __init__(self, *, freeze_every_s: float = 5.0, full_every_s: float = 600.0,
                 report_every_s: float = 60.0) -> None:
        self._freeze_every = freeze_every_s
        self._full_every = full_every_s
        self._report_every = report_every_s
        self._last_full = self._last_report = time.monotonic()
        self._rounds, self._round_ms, self._round_found = 0, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-keeper", daemon=True)
        self.pauses = Pauses()
        self._trace = _Trace.from_env()

    def start(self) -> HeapKeeper:
        """Collect and freeze what start-up left (imports, settings, clients), then keep freezing."""
        gc.collect()
        gc.freeze()
        self._last_full = time.monotonic()
        log.info("heap_frozen", objects=gc.get_freeze_count())
        gc.callbacks.append(self.pauses)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop freezing and give the frozen objects back to the collector."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.pauses in gc.callbacks:
            gc.callbacks.remove(self.pauses)
        gc.unfreeze()

    def tick(self, now: float | None = None) -> int:
        """One round: the full collection when it is due, else collect what is not frozen and freeze it.

        Returns how many unreachable objects the collection found.
        """
        now = time.monotonic() if now is None else now
        if now - self._last_full >= self._full_every:
            return self.full()
        started = time.perf_counter()
        found = gc.collect()  # frozen objects are not walked: this is the survivors since the last freeze
        gc.freeze()
        self._rounds += 1
        self._round_ms = max(self._round_ms, (time.perf_counter() - started) * 1000)
        self._round_found += found
        if now - self._last_report >= self._report_every:
            log.info("heap_frozen", objects=gc.get_freeze_count(), rounds=self._rounds,
                     pause_ms=round(self._round_ms, 1), unreachable=self._round_found, **self.pauses.take())
            self._last_report = now
            self._rounds, self._round_ms, self._round_found = 0, 0.0, 0
        return found

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
            if self._trace is not None:
                self._trace.maybe_record(self)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Trace:
    """The ``WIREWATCH_HEAP_TRACE`` records (see the module docstring)."""

    def __init__(self, directory: Path, every_s: float, base_at_s: float, full_at_s: float | None,
                 frames: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"heap-{os.getpid()}.jsonl"
        self.every_s, self.base_at_s, self.full_at_s = every_s, base_at_s, full_at_s
        self.t0 = self.last = time.monotonic()
        self.base: tracemalloc.Snapshot | None = None
        self.census_base: Counter[str] | None = None
        self.frames = frames
        if frames:
            tracemalloc.start(frames)
        self.write({"argv": sys.argv, "rss_kib": _rss_kib()})

    @classmethod
    def from_env(cls) -> _Trace | None:
        where, env = os.environ.get("WIREWATCH_HEAP_TRACE"), os.environ.get
        if not where:
            return None
        full_at = env("WIREWATCH_HEAP_TRACE_FULL_AT_S")
        return cls(Path(where), float(env("WIREWATCH_HEAP_TRACE_EVERY_S", "60")),
                   float(env("WIREWATCH_HEAP_TRACE_BASE_AT_S", "300")), float(full_at) if full_at else None,
                   int(env("WIREWATCH_HEAP_TRACE_FRAMES", "8")))

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def maybe_record(self, keeper: HeapKeeper) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s * 0.9:  # the keeper's rounds may be as long as the interval
            return
        self.last = now
        row: dict[str, Any] = {"t_s": round(now - self.t0), "rss_kib": _rss_kib(), "gc_count": gc.get_count(),
                               "frozen": gc.get_freeze_count(),
                               "traced_kib": tracemalloc.get_traced_memory()[0] // 1024}
        census = self.census()
        if self.census_base is None and now - self.t0 >= self.base_at_s:
            self.census_base = census
            if self.frames:
                self.base = tracemalloc.take_snapshot()
        elif self.census_base is not None:
            census.subtract(self.census_base)
            row["types_grew"] = census.most_common(15)
            if self.base is not None:
                diff = tracemalloc.take_snapshot().compare_to(self.base, "traceback")
                row["grew"] = [{"kib": d.size_diff // 1024, "count": d.count_diff,
                                "at": d.traceback.format()[-16:]} for d in diff[:12]]
        if self.full_at_s is not None and now - self.t0 >= self.full_at_s:
            self.full_at_s = None
            row |= self.full_saving(keeper)
        self.write(row)

    @staticmethod
    def census() -> Counter[str]:
        """Tracked objects by type, the frozen ones included (they are unfrozen for the count)."""
        gc.unfreeze()
        try:
            return Counter(type(o).__qualname__ for o in gc.get_objects())
        finally:
            gc.freeze()

    @staticmethod
    def full_saving(keeper: HeapKeeper) -> dict[str, Any]:
        """A full collection that keeps what it found in ``gc.garbage`` long enough to count it by type."""
        before, started = _rss_kib(), time.monotonic()
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            found = gc.collect()
        finally:
            gc.set_debug(0)
        types = Counter(type(o).__qualname__ for o in gc.garbage).most_common(25)
        gc.garbage.clear()
        gc.collect()
        gc.freeze()
        keeper._last_full = time.monotonic()
        return {"full_found": found, "full_types": types, "full_s": round(keeper._last_full - started, 3),
                "rss_before_full_kib": before, "rss_after_full_kib": _rss_kib()}
