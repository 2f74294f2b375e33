"""Step 1, poll: fill a batch, and wait between retries without losing the group or skipping a record.

Every ``consumer.poll()`` of the loop goes through :meth:`Poller.poll`, which stamps
:attr:`wirewatch.liveness.Liveness.poll_since` so the watchdog can tell a stuck poll, and afterwards resumes a
join the client abandoned (:meth:`wirewatch.liveness.Liveness.resume_join`). Rebalances seen
while polling are handled by :class:`wirewatch.bus.rebalance.Rebalances`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from wirewatch.bus.config import LoopConfig
from wirewatch.bus.rebalance import Rebalances
from wirewatch.faults import FATAL, fatal, kind_of
from wirewatch.liveness import Liveness
from wirewatch.log import get_logger

log = get_logger("bus")


class Poller:
    """Polls ``group``'s consumer: batches for the loop, and keep-alive polls while a retry waits."""

    def __init__(self, group: str, cfg: LoopConfig, liveness: Liveness, rebalances: Rebalances,
                 stop: threading.Event) -> None:
        self.group = group
        self.cfg = cfg
        self.liveness = liveness
        self.rebalances = rebalances
        self._stop = stop

    def poll(self, consumer: KafkaConsumer, timeout_ms: int, max_records: int | None = None) -> dict[Any, Any]:
        """One ``consumer.poll()``, watched by the liveness watchdog; raises what the client raises."""
        self.liveness.poll_since = time.monotonic()
        try:
            return dict(consumer.poll(timeout_ms=timeout_ms, max_records=max_records))
        finally:
            self.liveness.poll_since = None
            self.liveness.resume_join(consumer)

    def batch(self, consumer: KafkaConsumer) -> list[Any]:
        """Up to ``batch_size`` records, waiting at most ``max_wait_ms`` once the first arrived.

        Records of partitions a rebalance took away meanwhile are left out (uncommitted). Raises what the
        poll raises, after seeking back to the records already handed out, so a failure never skips one.
        """
        self.rebalances.clear()
        records: list[Any] = []
        deadline = time.monotonic() + self.cfg.max_wait_ms / 1000
        while len(records) < self.cfg.batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            timeout = self.cfg.poll_timeout_ms if not records else max(0, int(remaining * 1000))
            try:
                polled = self.poll(consumer, timeout, self.cfg.batch_size - len(records))
            except Exception:
                if records:  # already handed out: read them again after the failure, never skip them
                    self.rewind(consumer, records)
                raise
            for batch in polled.values():
                records.extend(batch)
            if self.rebalances.happened:
                self.rebalances.clear()
                records = self.rebalances.owned(consumer, records)
            if not records or time.monotonic() >= deadline:
                break
        self.liveness.polled(consumer, len(records))
        return records

    def wait(self, consumer: KafkaConsumer | None, delay: float) -> bool:
        """Sleep ``delay`` while keeping group membership; False when stopping or a rebalance happened.

        Every owned partition stays paused while it waits, also ones a rebalance hands over during the wait,
        and whatever a poll returns anyway is given back (its partition sought to its first record), so the
        wait never moves a position past a record nobody handled. Raises :class:`wirewatch.faults.WorkerFatal`
        when the broker refuses the poll for good (authorization); an unreachable broker is waited out.
        """
        deadline = time.monotonic() + delay
        if consumer is None:
            time.sleep(delay)
            return not self._stop.is_set()
        consumer.pause(*consumer.assignment())
        self.liveness.waiting = True
        try:
            while time.monotonic() < deadline:
                if self._stop.is_set():
                    return False
                try:
                    polled = self.poll(consumer, min(500, max(1, int((deadline - time.monotonic()) * 1000))))
                except Exception as exc:
                    if kind_of(exc) == FATAL:
                        raise fatal(self.group, "polling", exc) from exc
                    # the broker is unreachable: keep waiting
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                    polled = {}
                if polled:
                    self._seek_first(consumer, [r for batch in polled.values() for r in batch],
                                     "wait_poll_given_back")
                consumer.pause(*consumer.assignment())  # partitions gained in a rebalance during this poll
                if self.rebalances.happened:
                    return False
        finally:
            self.liveness.waiting = False
            consumer.resume(*consumer.assignment())
        return True

    def rewind(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        """Drop an unfinished batch: seek each partition we still own back to the batch's first offset."""
        self._seek_first(consumer, records, "batch_dropped_uncommitted")

    def _seek_first(self, consumer: KafkaConsumer, records: list[Any], event: str) -> None:
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        owned = consumer.assignment()
        for tp, offset in first.items():
            if tp in owned:
                consumer.seek(tp, offset)
        log.info(event, group=self.group, size=len(records),
                 rewound=sorted(f"{tp.topic}:{tp.partition}@{o}" for tp, o in first.items() if tp in owned))
