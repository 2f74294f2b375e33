"""The audit trail: Delivery records produced to ``wirewatch.deliveries`` in small batches.

Senders hand over a record and, optionally, what to do once Kafka acknowledged it (take the entry out of
the outbox): an outbox entry leaves only after its ``sent``/``failed`` record is durable, so a crash
never leaves a sent notification without its audit line (at worst the line is written twice).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable

from wirewatch.bus import Outgoing, ProduceError, Producer
from wirewatch.log import get_logger
from wirewatch.records import Delivery, encode
from wirewatch.settings import Settings

log = get_logger("alerts.recorder")
Done = Callable[[], None]


def delivery_id() -> str:
    """A fresh id for one audit record."""
    return uuid.uuid4().hex


class Recorder:
    """Batches Delivery records to Kafka in a background thread; ``flush`` waits for everything handed over."""

    def __init__(self, settings: Settings, producer: Producer, *, linger_s: float = 0.02) -> None:
        self._topic = settings.kafka.topics.deliveries
        self._producer = producer
        self._linger = linger_s
        self._q: queue.Queue[tuple[Delivery, Done | None]] = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._in_hand = 0
        self._thread = threading.Thread(target=self._run, name="alerts-recorder", daemon=True)

    def start(self) -> Recorder:
        """Start the background thread."""
        self._thread.start()
        return self

    def record(self, d: Delivery, then: Done | None = None) -> None:
        """Queue ``d``; ``then`` runs after Kafka acknowledged it."""
        with self._idle:
            self._in_hand += 1
        self._q.put((d, then))

    def record_now(self, records: list[Delivery]) -> None:
        """Produce ``records`` and wait for the acknowledgement (raises ProduceError)."""
        if records:
            self._producer.send_many([Outgoing(self._topic, d.subscription_id, encode(d)) for d in records])

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued record was produced; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_hand:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush and stop the thread."""
        self.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self._linger
            while len(batch) < 500:
                try:
                    batch.append(self._q.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._produce(batch)

    def _produce(self, batch: list[tuple[Delivery, Done | None]]) -> None:
        delay = 0.5
        while True:
            try:
                self.record_now([d for d, _ in batch])
                break
            except ProduceError as exc:
                log.warning("delivery_record_retry", count=len(batch), delay_s=delay, error=str(exc))
                if self._stop.wait(delay):
                    return
                delay = min(30.0, delay * 2)
        for _, then in batch:
            if then is not None:
                try:
                    then()
                except Exception as exc:  # noqa: BLE001 - the entry stays in the outbox and is settled again
                    log.warning("delivery_settle_failed", error=f"{type(exc).__name__}: {exc}")
        with self._idle:
            self._in_hand -= len(batch)
            self._idle.notify_all()
