"""Step 4, dead-letter: park rejected records in ``<topic>.dlq``, and stop before a topic drains into it.

A rejected record is never skipped without its copy in the DLQ: the batch is committed only after
:meth:`DeadLetters.write` succeeded. The copy carries the original key, bytes and headers plus
``wirewatch.error``, ``wirewatch.error.kind``, ``wirewatch.source.{topic,partition,offset,timestamp}``
and ``wirewatch.group``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from wirewatch import metrics
from wirewatch.bus.config import LoopConfig
from wirewatch.bus.consumed import Rejected
from wirewatch.bus.produce import Outgoing, Producer
from wirewatch.faults import TRANSIENT, fatal, kind_of
from wirewatch.log import describe_error, get_logger
from wirewatch.settings import Settings

log = get_logger("bus")


class DlqRatioExceeded(RuntimeError):
    """Nearly every recent message failed; the loop stopped instead of draining the topic into its DLQ."""


class DlqRatioGuard:
    """Counts, over the last ``dlq_window`` messages, how many failed."""

    def __init__(self, group: str, cfg: LoopConfig) -> None:
        self.group = group
        self.cfg = cfg
        self._recent: deque[bool] = deque(maxlen=cfg.dlq_window)

    def check(self, total: int, failed: int) -> None:
        """Record a batch of ``total`` messages of which ``failed`` go to the DLQ.

        Raises:
            DlqRatioExceeded: when at least ``dlq_min_count`` messages were seen and the failed share reached
                ``dlq_max_ratio``; the caller stops without committing.
        """
        self._recent.extend([True] * failed + [False] * (total - failed))
        n = len(self._recent)
        ratio = sum(self._recent) / n if n else 0.0
        if n >= self.cfg.dlq_min_count and ratio >= self.cfg.dlq_max_ratio:
            log.error("dlq_ratio_exceeded", group=self.group, ratio=round(ratio, 3), window=n)
            raise DlqRatioExceeded(
                f"consumer group {self.group}: {ratio:.0%} of the last {n} messages failed "
                f"(limit {self.cfg.dlq_max_ratio:.0%}); stopping without committing so nothing is drained to the DLQ"
            )


class DeadLetters:
    """Writes rejected records to their topic's DLQ through ``producer``."""

    def __init__(self, settings: Settings, group: str, cfg: LoopConfig, producer: Producer,
                 wait: Callable[[float], bool]) -> None:
        self.settings = settings
        self.group = group
        self.cfg = cfg
        self._producer = producer
        self._wait = wait

    def write(self, bad: list[Rejected]) -> bool:
        """Write ``bad`` to the DLQ, retrying with backoff while keeping the group; False: gave up.

        The batch is not committed until this succeeded, so a poison record is never skipped without its copy
        in the DLQ. It gives up only when a rebalance or stop comes first; the batch is then read again.

        Raises:
            WorkerFatal: when the DLQ cannot be written for a reason retrying does not fix (the record can
                then neither be parked nor skipped without losing it).
        """
        attempt = 0
        while True:
            try:
                self._send(bad)
                return True
            except Exception as exc:
                if kind_of(exc) != TRANSIENT:
                    # The record can neither be parked nor skipped without losing it.
                    raise fatal(self.group, "writing to the DLQ", exc, attempt + 1) from exc
                attempt += 1
                metrics.BUS_DLQ_RETRIES.labels(self.group).inc()
                delay = self.cfg.backoff(attempt)
                log.warning("dlq_write_retry", group=self.group, size=len(bad), attempt=attempt, delay_s=delay,
                            error=describe_error(exc))
                if not self._wait(delay):
                    log.info("dlq_write_abandoned", group=self.group, size=len(bad), attempts=attempt)
                    return False

    def _send(self, bad: list[Rejected]) -> None:
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
