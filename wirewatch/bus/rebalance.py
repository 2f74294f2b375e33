"""Rebalances, in one place: what the loop notes when the group moves partitions, and what it drops then.

A rebalance can only happen inside ``consumer.poll()``: when the loop polls for a batch
(:meth:`wirewatch.bus.poll.Poller.batch`) and when it waits between retries while keeping its group
membership (:meth:`wirewatch.bus.poll.Poller.wait`). Both read :attr:`Rebalances.happened`:

- records polled before a rebalance, of partitions no longer ours, are dropped from the batch uncommitted
  (their new owner reads them from the last commit);
- a retry wait that saw a rebalance ends early, and the batch in flight is dropped uncommitted;
- batches are committed as soon as they are handled, so a revocation never finds handled work uncommitted.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from wirewatch import metrics
from wirewatch.log import get_logger

log = get_logger("bus")


def _names(partitions: Any) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)


class Rebalances:
    """Notes rebalances of ``group``'s consumer; subscribe with :meth:`listener`."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.happened = False
        """Partitions were revoked since :meth:`clear` (set inside ``consumer.poll()``)."""

    def clear(self) -> None:
        """Forget earlier rebalances; :attr:`happened` turns True again at the next revocation."""
        self.happened = False

    def listener(self) -> ConsumerRebalanceListener:
        """The listener to ``subscribe`` with."""
        return _Listener(self)

    def revoked(self, revoked: list[TopicPartition]) -> None:
        """Partitions were taken away: a batch still in flight is dropped uncommitted."""
        self.happened = True
        metrics.BUS_COMMITS.labels(self.group, "revoke").inc()
        log.info("partitions_revoked", group=self.group, partitions=_names(revoked))

    def assigned(self, assigned: list[TopicPartition]) -> None:
        """Partitions were handed to us (logged; their records arrive through the next polls)."""
        log.info("partitions_assigned", group=self.group, partitions=_names(assigned))

    @staticmethod
    def owned(consumer: KafkaConsumer, records: list[Any]) -> list[Any]:
        """The ``records`` of partitions ``consumer`` still owns."""
        assignment = consumer.assignment()
        return [r for r in records if TopicPartition(r.topic, r.partition) in assignment]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, rebalances: Rebalances) -> None:
        self._rebalances = rebalances

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._rebalances.revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._rebalances.assigned(list(assigned))
