"""The consumer loop: poll → decode → handle (with retry) → dead-letter → commit, one batch at a time.

Each step is its own module, with its contract in its docstring: :mod:`.poll`, :mod:`.decode`,
:mod:`.handle`, :mod:`.deadletter`, :mod:`.commit`; rebalances are handled in :mod:`.rebalance` and
liveness (stuck polls, lost membership) in :mod:`wirewatch.liveness`. :meth:`ConsumerLoop._process`
chains the steps for one batch.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from wirewatch import metrics
from wirewatch.bus.commit import Committer, update_lag
from wirewatch.bus.config import LoopConfig
from wirewatch.bus.consumed import Handler
from wirewatch.bus.deadletter import DeadLetters, DlqRatioGuard
from wirewatch.bus.decode import decode_all
from wirewatch.bus.handle import RetryingHandler
from wirewatch.bus.names import client_config
from wirewatch.bus.poll import Poller
from wirewatch.bus.produce import Producer
from wirewatch.bus.rebalance import Rebalances
from wirewatch.faults import FATAL, TRANSIENT, fatal, kind_of
from wirewatch.liveness import Liveness
from wirewatch.log import describe_error, get_logger
from wirewatch.settings import Settings

log = get_logger("bus")
T = TypeVar("T")


class ConsumerLoop(Generic[T]):
    """Consume ``topics`` as ``group`` and hand decoded batches to ``handle``. See :mod:`wirewatch.bus`."""

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
        self.cfg = cfg = config or LoopConfig()
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        poll_stall, member_stall = cfg.poll_stall_s, cfg.member_stall_s
        self.liveness = Liveness(
            group,
            poll_stall_s=float(settings.kafka.poll_stall_s if poll_stall is None else poll_stall),
            member_stall_s=float(settings.kafka.member_stall_s if member_stall is None else member_stall),
            session_timeout_s=cfg.session_timeout_ms / 1000,
        )
        self._rebalances = Rebalances(group)
        self._poller = Poller(group, cfg, self.liveness, self._rebalances, self._stop)
        # ``self._handle`` is looked up per call, so a handler swapped on a running loop takes effect.
        self._handle_step: RetryingHandler[T] = RetryingHandler(group, cfg, lambda items: self._handle(items),
                                                                self._wait_alive)
        self._ratio = DlqRatioGuard(group, cfg)
        self._dead_letters = DeadLetters(settings, group, cfg, producer, self._wait_alive)
        self._committer = Committer(group, cfg, self._wait_alive)
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
        consumer.subscribe(self.topics, listener=self._rebalances.listener())
        self._await_group_metadata(consumer)
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

    def _await_group_metadata(self, consumer: KafkaConsumer, timeout_s: float = 5.0) -> None:
        # The client rebalances again as soon as the partitions it knows for its subscription change. It learns
        # them for the subscription only at the first metadata update after subscribe(); a join made before that
        # is followed by a second one at once (and by a join abandoned half-way, see liveness.join_abandoned).
        # Wait for that update (kafka-python 3.0.x internals; without them, this returns at once).
        coordinator = getattr(consumer, "_coordinator", None)
        if getattr(coordinator, "_metadata_snapshot", None) is None:
            return
        deadline = time.monotonic() + timeout_s
        while not all((getattr(coordinator, "_metadata_snapshot", None) or {}).get(t) for t in self.topics):
            if time.monotonic() >= deadline or self._stop.is_set():
                return
            time.sleep(0.05)

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
                    records = self._poller.batch(consumer)
                except Exception as exc:
                    kind = kind_of(exc)
                    if kind == FATAL:
                        raise fatal(self.group, "polling", exc, failures + 1) from exc
                    if (kind != TRANSIENT and not isinstance(exc, KafkaError)
                            and not self.liveness.mend(consumer, error=describe_error(exc))):
                        raise
                    # The broker is unreachable (e.g. restarting): nothing was handed out, so wait and poll again
                    # instead of letting the worker die. A Kafka error retrying may not fix is retried too: there
                    # is no record to park, and stopping would not fix it either. So is the error of a heartbeat
                    # task that ended, which poll() raises once: the client was asked to rejoin, which starts a
                    # new one.
                    failures += 1
                    delay = self.cfg.backoff(failures)
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

    # -- one batch ---------------------------------------------------------------------------------------
    def _process(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        started = time.monotonic()
        good, bad = decode_all(self.group, self._decode, records)
        if good:
            rejected = self._handle_step(good)
            if rejected is None:  # a rebalance or stop cut a retry short
                self._poller.rewind(consumer, records)
                return
            bad.extend(rejected)
        self._ratio.check(len(records), len(bad))
        if bad and not self._dead_letters.write(bad):
            self._poller.rewind(consumer, records)  # the side effects may run again: at-least-once
            return
        self._commit(consumer, records)
        self.batches += 1
        metrics.BUS_BATCH_SECONDS.labels(self.group).observe(time.monotonic() - started)
        update_lag(self.group, consumer)

    def _commit(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        self._committer.commit(consumer, records)

    def _wait_alive(self, delay: float) -> bool:
        """Wait ``delay`` between retries, keeping the group (:meth:`Poller.wait`)."""
        return self._poller.wait(self._consumer, delay)
