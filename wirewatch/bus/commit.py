"""Step 5, commit: the batch's offsets, once its side effects and DLQ copies are acknowledged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from wirewatch import metrics
from wirewatch.bus.config import LoopConfig
from wirewatch.faults import FATAL, TRANSIENT, fatal, kind_of
from wirewatch.log import describe_error, get_logger

log = get_logger("bus")


class Committer:
    """Commits ``group``'s position past a handled batch."""

    def __init__(self, group: str, cfg: LoopConfig, wait: Callable[[float], bool]) -> None:
        self.group = group
        self.cfg = cfg
        self._wait = wait

    def commit(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        """Commit, for each partition of ``records``, the offset after its last record.

        A commit the group refuses because it rebalanced is given up (the new owner re-reads from the last
        commit: at-least-once); an unreachable broker is retried with backoff while keeping the group, until
        a rebalance or stop comes first (then the batch is read again, or a later commit covers it).

        Raises:
            WorkerFatal: when the broker refuses the commit for good (authorization).
        """
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
                delay = self.cfg.backoff(attempt)
                log.warning("commit_retry", group=self.group, attempt=attempt, delay_s=delay,
                            error=describe_error(exc))
                if not self._wait(delay):
                    log.info("commit_abandoned", group=self.group, size=len(records))
                    return


def update_lag(group: str, consumer: KafkaConsumer) -> None:
    """Set ``wirewatch_bus_lag`` of each owned partition (end offset minus position); skips what it cannot read."""
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            pos = consumer.position(tp, timeout_ms=100)
        except KafkaError:
            continue
        if pos is not None:
            metrics.BUS_LAG.labels(group, tp.topic, str(tp.partition)).set(max(0, high - pos))
