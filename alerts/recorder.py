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

import redis

from wirewatch.bus import Outgoing, ProduceError, Producer
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Delivery, RecordError, decode, encode
from wirewatch.settings import Settings
from wirewatch.state import key

log = get_logger("alerts.recorder")
RECENT_MAX = 10000


class RecentDeliveries:
    """The newest audit records, also kept in Redis (capped) so the API can list them without Kafka.

    Best effort: Kafka's ``deliveries`` topic is the audit trail; this is a window onto it.
    """

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._key = key(settings, "alerts", "deliveries", "recent")

    def add(self, records: list[Delivery], encoded: list[bytes] | None = None) -> None:
        """Prepend records (newest first) and trim to the cap; a Redis error is logged, never raised.

        ``encoded``, when given, is ``records`` already encoded (the recorder encodes each once, for Kafka).
        """
        try:
            pipe = self._r.pipeline(transaction=False)
            pipe.lpush(self._key, *(encoded if encoded is not None else [encode(d) for d in records]))
            pipe.ltrim(self._key, 0, RECENT_MAX - 1)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("recent_deliveries_write_failed", error=str(exc))

    def list(self, limit: int = 100, *, subscriptions: set[str] | None = None) -> list[Delivery]:
        """Newest first, optionally only for some subscriptions; unreadable entries are skipped."""
        out: list[Delivery] = []
        for raw in self._r.lrange(self._key, 0, RECENT_MAX - 1):
            try:
                d = decode(Delivery, raw)
            except RecordError:
                continue
            if subscriptions is None or d.subscription_id in subscriptions:
                out.append(d)
                if len(out) >= limit:
                    break
        return out
Done = Callable[[], None]


def delivery_id() -> str:
    """A fresh id for one audit record."""
    return uuid.uuid4().hex


class Recorder:
    """Batches Delivery records to Kafka in a background thread; ``flush`` waits for everything handed over."""

    def __init__(self, settings: Settings, producer: Producer, *, client: redis.Redis | None = None,
                 linger_s: float = 0.02) -> None:
        self._topic = settings.kafka.topics.deliveries
        self._producer = producer
        self._recent = RecentDeliveries(client, settings) if client is not None else None
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
            encoded = [encode(d) for d in records]
            self._producer.send_many([Outgoing(self._topic, d.subscription_id, raw)
                                      for d, raw in zip(records, encoded, strict=True)])
            if self._recent is not None:
                self._recent.add(records, encoded)

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
                    log.warning("delivery_settle_failed", error=describe_error(exc))
        with self._idle:
            self._in_hand -= len(batch)
            self._idle.notify_all()
