"""Kafka behind a small producer and a consumer loop: at-least-once, commit after success, DLQ for poison.

The loop's contract, per batch:

1. poll up to ``batch_size`` records (waiting at most ``max_wait_ms`` to fill it);
2. decode each; undecodable ones (bad JSON, unknown schema major) are set aside for the DLQ;
3. call ``handle(batch)``. It performs the batch's side effects (produce outputs and wait for their acks,
   write Redis...) and returns the items it rejects as poison, with a reason;
4. produce rejected and undecodable items to ``<topic>.dlq`` (original key and bytes, error headers),
   retrying with backoff while the DLQ cannot be written (the batch waits, uncommitted);
5. commit the batch's offsets. Only then is the batch done.

What an exception from ``handle`` (or from Kafka itself) means is decided once, in :mod:`wirewatch.faults`:
a transient one (Kafka, Redis or the network unreachable or busy) retries the whole batch with capped
exponential backoff and never commits it; a fatal one (authorization, credentials, permissions) stops the
loop with :class:`WorkerFatal` naming who refused what; any other is taken as a poison item hiding in the
batch: the batch is retried item by item and the items that still raise go to the DLQ. A rebalance while
a batch is in flight drops the batch uncommitted (the new owner re-reads it). If nearly everything recently
went to the DLQ (``dlq_max_ratio``), the loop stops with :class:`DlqRatioExceeded` before committing, so a
broken deployment does not drain a topic into its DLQ.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from wirewatch import metrics
from wirewatch.faults import FATAL, TRANSIENT, ProduceError, WorkerFatal, fatal, kind_of
from wirewatch.liveness import Liveness
from wirewatch.log import describe_error, get_logger
from wirewatch.records import RecordError
from wirewatch.settings import Settings

log = get_logger("bus")
T = TypeVar("T")


class DlqRatioExceeded(RuntimeError):
    """Nearly every recent message failed; the loop stopped instead of draining the topic into its DLQ."""


__all__ = ["ProduceError", "WorkerFatal"]  # defined with the error kinds in wirewatch.faults

# The consumer group of each consumer role; the workers join them and ops' watchdog and lag report read them.
CLASSIFY_GROUP = "wirewatch-classify"
ALERTS_GROUP = "wirewatch-alerts"
ROLE_GROUPS = {"classify": CLASSIFY_GROUP, "alerts": ALERTS_GROUP}

# Headers on the copies a replay produces (``wirewatch.ops.replay``): which replay, the original record
# (``topic:partition:offset``) and, when the replay was for one topic, that topic's id (classify then scores
# the copy against that topic only).
REPLAY_HEADER = "wirewatch.replay"
REPLAY_SOURCE_HEADER = "wirewatch.replay.source"
REPLAY_TOPIC_HEADER = "wirewatch.replay.topic"


def client_config(settings: Settings) -> dict[str, Any]:
    """The connection options every Kafka client of ``settings`` shares: bootstrap servers, security, SASL."""
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": k.security_protocol,
    }
    if k.sasl_mechanism:
        conf.update(
            sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username, sasl_plain_password=k.sasl_password
        )
    return conf


@dataclass(frozen=True)
class Outgoing:
    """A record to produce."""

    topic: str
    key: str | bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


def _kb(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class Producer:
    """An idempotent producer (acks=all, bounded retries).

    ``send_many`` returns only once Kafka acknowledged every record.
    """

    def __init__(self, settings: Settings, *, client_id: str = "wirewatch", **overrides: Any) -> None:
        conf = (
            client_config(settings)
            | {
                "client_id": f"{settings.kafka.client_id}-{client_id}",
                "acks": "all",
                "enable_idempotence": True,
                "retries": 10,
                "max_in_flight_requests_per_connection": 5,
                "linger_ms": 5,
                "request_timeout_ms": 15000,
                "delivery_timeout_ms": 60000,
                "max_block_ms": 30000,
                "max_request_size": 4 * 1024 * 1024,
            }
            | overrides
        )
        self._producer = KafkaProducer(**conf)

    def send_many(self, items: Iterable[Outgoing], timeout_s: float = 60.0) -> int:
        """Produce ``items`` and wait for all acknowledgements. Returns how many were produced.

        Raises:
            ProduceError: when any record was not acknowledged within ``timeout_s``.
        """
        items = list(items)
        futures = []
        try:
            for item in items:
                futures.append(
                    (
                        item.topic,
                        self._producer.send(
                            item.topic, key=_kb(item.key), value=item.value, headers=list(item.headers)
                        ),
                    )
                )
            self._producer.flush(timeout=timeout_s)
            for topic, fut in futures:
                fut.get(timeout=max(0.1, timeout_s))
                metrics.BUS_PRODUCED.labels(topic).inc()
        except KafkaError as exc:
            topics = sorted({i.topic for i in items})
            raise ProduceError(
                f"Kafka did not acknowledge {len(items)} record(s) for {', '.join(topics)}: {describe_error(exc)}"
            ) from exc
        return len(futures)

    def send(self, item: Outgoing, timeout_s: float = 60.0) -> None:
        """Produce one record and wait for its acknowledgement."""
        self.send_many([item], timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close."""
        self._producer.close(timeout=timeout_s)


def ensure_topics(settings: Settings, topics: dict[str, int], *, timeout_s: float = 30.0) -> None:
    """Create each topic with its partition count if missing, and grow partitions that are too few."""
    admin = KafkaAdminClient(
        **client_config(settings),
        client_id=f"{settings.kafka.client_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, partitions, settings.kafka.replication_factor)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if new:
            try:
                admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass
            log.info("topics_created", topics=[t.name for t in new])
        grow = {}
        for meta in admin.describe_topics([n for n in topics if n in existing]):
            name = meta.get("name") or meta.get("topic")
            want = topics[name]
            if len(meta["partitions"]) < want:
                grow[name] = NewPartitions(total_count=want)
        if grow:
            admin.create_partitions(grow)
            log.info("topic_partitions_grown", topics=sorted(grow))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not set(topics) <= set(admin.list_topics()):
            time.sleep(0.2)
    finally:
        admin.close()


def ensure_default_topics(settings: Settings) -> None:
    """The three pipeline topics with ``kafka.partitions`` partitions, and their DLQs with one."""
    t = settings.kafka.topics
    wanted = {
        t.articles: settings.kafka.partitions,
        t.matches: settings.kafka.partitions,
        t.deliveries: settings.kafka.partitions,
    }
    wanted |= {settings.dlq(name): 1 for name in list(wanted)}
    ensure_topics(settings, wanted)


@dataclass(frozen=True)
class Consumed(Generic[T]):
    """A decoded record with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: T
    timestamp_ms: int
    headers: Sequence[tuple[str, bytes]]
    raw: bytes


Handler = Callable[[list[Consumed[T]]], Sequence[tuple[Consumed[T], str]] | None]


@dataclass
class _Rejected:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int
    kind: str
    reason: str


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop[Any]) -> None:
        self._loop = loop

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._loop._on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info(
            "partitions_assigned",
            group=self._loop.group,
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )


@dataclass
class LoopConfig:
    """Tuning of a consumer loop."""

    batch_size: int = 500
    max_wait_ms: int = 200
    poll_timeout_ms: int = 200
    max_backoff_s: float = 30.0
    dlq_window: int = 200
    dlq_min_count: int = 50
    dlq_max_ratio: float = 0.9
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    poll_stall_s: float | None = None
    """A ``poll()`` that has not returned after this long is stuck (the client can wait for its group
    coordinator without a timeout); see :mod:`wirewatch.liveness`. None: ``kafka.poll_stall_s`` (60 s);
    0 disables the check. A healthy poll returns within a second; a rebalance waits for every member's
    next poll, which our batches bound to seconds."""
    member_stall_s: float | None = None
    """Not a live group member, or not consuming partitions with lag, for this long: the loop is stalled
    (:mod:`wirewatch.liveness`). None: ``kafka.member_stall_s`` (30 s); 0 disables both checks."""
    extra: dict[str, Any] = field(default_factory=dict)


class ConsumerLoop(Generic[T]):
    """Consume ``topics`` as ``group`` and hand decoded batches to ``handle``. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str],
        group: str,
        decode: Callable[[bytes], T],
        handle: Handler[T],
        producer: Producer,
        config: LoopConfig | None = None,
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.group = group
        self._decode = decode
        self._handle = handle
        self._producer = producer
        self.cfg = config or LoopConfig()
        self._stop = threading.Event()
        self._rebalanced = False
        self._recent: deque[bool] = deque(maxlen=self.cfg.dlq_window)
        self._consumer: KafkaConsumer | None = None
        poll_stall, member_stall = self.cfg.poll_stall_s, self.cfg.member_stall_s
        self.liveness = Liveness(
            group,
            poll_stall_s=float(settings.kafka.poll_stall_s if poll_stall is None else poll_stall),
            member_stall_s=float(settings.kafka.member_stall_s if member_stall is None else member_stall),
            session_timeout_s=self.cfg.session_timeout_ms / 1000,
        )
        self.batches = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def _make_consumer(self) -> KafkaConsumer:
        c = self.cfg
        consumer = KafkaConsumer(
            **client_config(self.settings),
            group_id=self.group,
            client_id=f"{self.settings.kafka.client_id}-{self.group}-{socket.gethostname()}-{os.getpid()}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=c.batch_size,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_poll_interval_ms=c.max_poll_interval_ms,
            request_timeout_ms=30000,
            **c.extra,
        )
        self._await_metadata(consumer)
        consumer.subscribe(self.topics, listener=_Listener(self))
        return consumer

    def _await_metadata(self, consumer: KafkaConsumer, timeout_s: float = 60.0) -> None:
        # Joining the group before the client knows a topic's partitions yields an empty assignment that
        # lasts until the next metadata refresh (minutes); wait for the partitions first.
        deadline = time.monotonic() + timeout_s
        missing = list(self.topics)
        while missing and time.monotonic() < deadline and not self._stop.is_set():
            missing = [t for t in missing if not consumer.partitions_for_topic(t)]
            if missing:
                time.sleep(0.2)
        if missing:
            log.warning("topic_metadata_missing", group=self.group, topics=missing, waited_s=timeout_s)

    def run(self) -> None:
        """Consume until :meth:`stop`. Raises :class:`DlqRatioExceeded` when nearly everything fails.

        A watchdog thread (:mod:`wirewatch.liveness`) checks that polls return, that the consumer is a live
        member of its group and that it consumes what its partitions hold. A failed check is logged as
        ``consumer_stalled`` and counted; when the loop runs on the process's main thread (a worker process)
        the process then exits with status 75 so its supervisor restarts it. Nothing is lost: offsets are
        committed only after a batch's outputs were acknowledged.
        """
        self._consumer = consumer = self._make_consumer()
        log.info("consumer_started", group=self.group, topics=self.topics)
        self.liveness.watch(consumer)
        self.liveness.start(exit_on_stall=threading.current_thread() is threading.main_thread())
        try:
            failures = 0
            while not self._stop.is_set():
                try:
                    records = self._poll_batch(consumer)
                except Exception as exc:
                    kind = kind_of(exc)
                    if kind == FATAL:
                        raise fatal(self.group, "polling", exc, failures + 1) from exc
                    if kind != TRANSIENT and not isinstance(exc, KafkaError):
                        raise
                    # The broker is unreachable (e.g. restarting): nothing was handed out, so wait and poll again
                    # instead of letting the worker die. A Kafka error retrying may not fix is retried too: there
                    # is no record to park, and stopping would not fix it either.
                    failures += 1
                    delay = min(self.cfg.max_backoff_s, 0.5 * 2 ** min(failures, 10))
                    log.warning("poll_failed", group=self.group, attempt=failures, delay_s=delay,
                                error=describe_error(exc))
                    self._stop.wait(delay)
                    continue
                failures = 0
                if records:
                    self._process(consumer, records)
        finally:
            self.liveness.stop()
            consumer.close(autocommit=False, timeout_ms=5000)
            self._consumer = None
            log.info("consumer_stopped", group=self.group, batches=self.batches)

    # -- internals ---------------------------------------------------------------------------------------
    def _poll(self, consumer: KafkaConsumer, timeout_ms: int, max_records: int | None = None) -> dict[Any, Any]:
        self.liveness.poll_since = time.monotonic()
        try:
            return dict(consumer.poll(timeout_ms=timeout_ms, max_records=max_records))
        finally:
            self.liveness.poll_since = None

    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        # Batches are committed as soon as they are handled, so nothing handled is left uncommitted here;
        # a batch still in flight belongs to a partition we may no longer own and is dropped uncommitted.
        self._rebalanced = True
        metrics.BUS_COMMITS.labels(self.group, "revoke").inc()
        log.info(
            "partitions_revoked", group=self.group, partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked)
        )

    def _poll_batch(self, consumer: KafkaConsumer) -> list[Any]:
        self._rebalanced = False
        records: list[Any] = []
        deadline = time.monotonic() + self.cfg.max_wait_ms / 1000
        while len(records) < self.cfg.batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            timeout = self.cfg.poll_timeout_ms if not records else max(0, int(remaining * 1000))
            try:
                polled = self._poll(consumer, timeout, self.cfg.batch_size - len(records))
            except Exception:
                if records:  # already handed out: read them again after the failure, never skip them
                    self._rewind(consumer, records)
                raise
            for batch in polled.values():
                records.extend(batch)
            if self._rebalanced:
                self._rebalanced = False
                records = [r for r in records if TopicPartition(r.topic, r.partition) in consumer.assignment()]
            if not records or time.monotonic() >= deadline:
                break
        self.liveness.polled(consumer, len(records))
        return records

    def _decode_all(self, records: list[Any]) -> tuple[list[Consumed[T]], list[_Rejected]]:
        good: list[Consumed[T]] = []
        bad: list[_Rejected] = []
        for r in records:
            metrics.BUS_CONSUMED.labels(self.group, r.topic).inc()
            raw = r.value or b""
            headers = list(r.headers or [])
            try:
                if not raw:
                    raise RecordError("empty message value")
                value = self._decode(raw)
            except RecordError as exc:
                bad.append(
                    _Rejected(r.topic, r.partition, r.offset, r.key, raw, headers, r.timestamp, "decode", str(exc))
                )
                continue
            good.append(Consumed(r.topic, r.partition, r.offset, r.key, value, r.timestamp, headers, raw))
        return good, bad

    def _handle_with_retry(self, items: list[Consumed[T]]) -> list[_Rejected] | None:
        """Run the handler; None means a rebalance or stop interrupted a transient-error retry."""
        attempt = 0
        while True:
            try:
                rejected = self._handle(items) or []
                return [self._reject(c, "rejected", reason) for c, reason in rejected]
            except Exception as exc:  # noqa: BLE001 - each kind is handled below
                kind = kind_of(exc)
                if kind == FATAL:
                    raise fatal(self.group, "handling a batch", exc, attempt + 1) from exc
                if kind != TRANSIENT:
                    return self._find_poison(items, exc)
                attempt += 1
                metrics.BUS_BATCH_RETRIES.labels(self.group).inc()
                delay = min(self.cfg.max_backoff_s, 0.5 * 2 ** min(attempt, 10))
                log.warning(
                    "batch_retry",
                    group=self.group,
                    attempt=attempt,
                    delay_s=delay,
                    error=describe_error(exc),
                )
                if not self._wait_alive(delay):
                    return None

    def _find_poison(self, items: list[Consumed[T]], exc: Exception) -> list[_Rejected] | None:
        """A permanent error is a poison item in ``items``: retry them one by one; the ones that raise go to the DLQ."""
        log.warning("batch_poison_suspected", group=self.group, size=len(items), error=describe_error(exc))
        if len(items) == 1:
            return [self._reject(items[0], "handler", describe_error(exc))]
        out: list[_Rejected] = []
        for item in items:
            sub = self._handle_with_retry([item])
            if sub is None:
                return None
            out.extend(sub)
        return out

    def _wait_alive(self, delay: float) -> bool:
        """Sleep ``delay`` while keeping group membership; False when stopping or a rebalance happened.

        Every owned partition stays paused while it waits, also ones a rebalance hands over during the wait,
        and whatever a poll returns anyway is given back (its partition sought to its first record), so the
        wait never moves a position past a record nobody handled.
        """
        consumer = self._consumer
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
                    polled = self._poll(consumer, min(500, max(1, int((deadline - time.monotonic()) * 1000))))
                except Exception as exc:
                    if kind_of(exc) == FATAL:
                        raise fatal(self.group, "polling", exc) from exc
                    # the broker is unreachable: keep waiting
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                    polled = {}
                if polled:
                    self._give_back(consumer, [r for batch in polled.values() for r in batch])
                consumer.pause(*consumer.assignment())  # partitions gained in a rebalance during this poll
                if self._rebalanced:
                    return False
        finally:
            self.liveness.waiting = False
            consumer.resume(*consumer.assignment())
        return True

    def _give_back(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        self._seek_first(consumer, records, "wait_poll_given_back")

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

    @staticmethod
    def _reject(c: Consumed[T], kind: str, reason: str) -> _Rejected:
        return _Rejected(c.topic, c.partition, c.offset, c.key, c.raw, c.headers, c.timestamp_ms, kind, reason)

    def _process(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        started = time.monotonic()
        good, bad = self._decode_all(records)
        if good:
            rejected = self._handle_with_retry(good)
            if rejected is None:
                self._rewind(consumer, records)
                return
            bad.extend(rejected)
        self._check_ratio(len(records), len(bad))
        if bad and not self._dead_letter(bad):
            self._rewind(consumer, records)  # the side effects may run again: at-least-once
            return
        self._commit(consumer, records)
        self.batches += 1
        metrics.BUS_BATCH_SECONDS.labels(self.group).observe(time.monotonic() - started)
        self._update_lag(consumer)

    def _rewind(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        """Drop an unfinished batch: seek each partition we still own back to the batch's first offset."""
        self._seek_first(consumer, records, "batch_dropped_uncommitted")

    def _check_ratio(self, total: int, failed: int) -> None:
        self._recent.extend([True] * failed + [False] * (total - failed))
        n = len(self._recent)
        ratio = sum(self._recent) / n if n else 0.0
        if n >= self.cfg.dlq_min_count and ratio >= self.cfg.dlq_max_ratio:
            log.error("dlq_ratio_exceeded", group=self.group, ratio=round(ratio, 3), window=n)
            raise DlqRatioExceeded(
                f"consumer group {self.group}: {ratio:.0%} of the last {n} messages failed "
                f"(limit {self.cfg.dlq_max_ratio:.0%}); stopping without committing so nothing is drained to the DLQ"
            )

    def _dead_letter(self, bad: list[_Rejected]) -> bool:
        """Write ``bad`` to the DLQ, retrying with backoff while keeping the group; False: gave up.

        The batch is not committed until this succeeded, so a poison record is never skipped without its copy
        in the DLQ. It gives up only when a rebalance or stop comes first; the batch is then read again.
        """
        attempt = 0
        while True:
            try:
                self._to_dlq(bad)
                return True
            except Exception as exc:
                if kind_of(exc) != TRANSIENT:
                    # The record can neither be parked nor skipped without losing it.
                    raise fatal(self.group, "writing to the DLQ", exc, attempt + 1) from exc
                attempt += 1
                metrics.BUS_DLQ_RETRIES.labels(self.group).inc()
                delay = min(self.cfg.max_backoff_s, 0.5 * 2 ** min(attempt, 10))
                log.warning("dlq_write_retry", group=self.group, size=len(bad), attempt=attempt, delay_s=delay,
                            error=describe_error(exc))
                if not self._wait_alive(delay):
                    log.info("dlq_write_abandoned", group=self.group, size=len(bad), attempts=attempt)
                    return False

    def _to_dlq(self, bad: list[_Rejected]) -> None:
        out = []
        for b in bad:
            headers = [
                *b.headers,
                ("wirewatch.error", b.reason[:2000].encode()),
                ("wirewatch.error.kind", b.kind.encode()),
                ("wirewatch.source.topic", b.topic.encode()),
                ("wirewatch.source.partition", str(b.partition).encode()),
                ("wirewatch.source.offset", str(b.offset).encode()),
                ("wirewatch.source.timestamp", str(b.timestamp_ms).encode()),
                ("wirewatch.group", self.group.encode()),
            ]
            out.append(Outgoing(self.settings.dlq(b.topic), b.key, b.raw, headers))
        self._producer.send_many(out)
        for b in bad:  # counted and logged once they are in the DLQ, not once per attempt
            metrics.BUS_DLQ.labels(self.group, b.topic, b.kind).inc()
            log.warning("message_dead_lettered", group=self.group, topic=b.topic, partition=b.partition,
                        offset=b.offset, kind=b.kind, reason=b.reason[:500])

    def _commit(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in offsets or offsets[tp].offset <= r.offset:
                offsets[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
        attempt = 0
        while True:
            try:
                consumer.commit(offsets)
                metrics.BUS_COMMITS.labels(self.group, "batch").inc()
                return
            except (CommitFailedError, RebalanceInProgressError) as exc:
                # The group moved on (rebalance); the new owner re-reads from the last commit: at-least-once.
                log.warning("commit_failed_rebalanced", group=self.group, error=str(exc))
                return
            except Exception as exc:
                kind = kind_of(exc)
                if kind == FATAL:
                    raise fatal(self.group, "committing offsets", exc, attempt + 1) from exc
                if kind != TRANSIENT and not isinstance(exc, KafkaError):
                    raise
                # The broker is unreachable (e.g. restarting). The batch's outputs are acknowledged, so keep the
                # worker alive and try again; if a rebalance or stop comes first, the batch stays uncommitted
                # and is read again (at-least-once), or a later commit of the same partitions covers it.
                attempt += 1
                metrics.BUS_COMMITS.labels(self.group, "retry").inc()
                delay = min(self.cfg.max_backoff_s, 0.5 * 2 ** min(attempt, 10))
                log.warning("commit_retry", group=self.group, attempt=attempt, delay_s=delay,
                            error=describe_error(exc))
                if not self._wait_alive(delay):
                    log.info("commit_abandoned", group=self.group, size=len(records))
                    return

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                pos = consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            if pos is not None:
                metrics.BUS_LAG.labels(self.group, tp.topic, str(tp.partition)).set(max(0, high - pos))
