"""Step 3, handle: run the handler on a batch, retrying what retrying can fix and isolating poison items.

What an exception means is decided once, in :mod:`wirewatch.faults`:

- transient (Kafka, Redis or the network unreachable or busy): the whole batch again, after a capped
  exponential backoff spent keeping the group (:meth:`wirewatch.bus.poll.Poller.wait`);
- fatal (authorization, credentials, permissions): :class:`wirewatch.faults.WorkerFatal` naming who
  refused what, after how many attempts;
- anything else: a poison item hides in the batch; the items are handled one by one and those that still
  raise are rejected (kind ``handler``) for the DLQ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from wirewatch import metrics
from wirewatch.bus.config import LoopConfig
from wirewatch.bus.consumed import Consumed, Handler, Rejected
from wirewatch.faults import FATAL, TRANSIENT, fatal, kind_of
from wirewatch.log import describe_error, get_logger

log = get_logger("bus")
T = TypeVar("T")


class RetryingHandler(Generic[T]):
    """Calls ``handle`` until it succeeds, a rebalance or stop interrupts a retry, or the error is fatal."""

    def __init__(self, group: str, cfg: LoopConfig, handle: Handler[T], wait: Callable[[float], bool]) -> None:
        self.group = group
        self.cfg = cfg
        self._handle = handle
        self._wait = wait

    def __call__(self, items: list[Consumed[T]]) -> list[Rejected] | None:
        """The items rejected (by the handler or as poison); None when a rebalance or stop cut a retry short.

        None means the batch is unfinished: the caller drops it uncommitted and it is read again.

        Raises:
            WorkerFatal: when the handler's error is fatal.
        """
        attempt = 0
        while True:
            try:
                rejected = self._handle(items) or []
                return [Rejected.of(c, "rejected", reason) for c, reason in rejected]
            except Exception as exc:  # noqa: BLE001 - each kind is handled below
                kind = kind_of(exc)
                if kind == FATAL:
                    raise fatal(self.group, "handling a batch", exc, attempt + 1) from exc
                if kind != TRANSIENT:
                    return self._find_poison(items, exc)
                attempt += 1
                metrics.BUS_BATCH_RETRIES.labels(self.group).inc()
                delay = self.cfg.backoff(attempt)
                log.warning(
                    "batch_retry",
                    group=self.group,
                    attempt=attempt,
                    delay_s=delay,
                    error=describe_error(exc),
                )
                if not self._wait(delay):
                    return None

    def _find_poison(self, items: list[Consumed[T]], exc: Exception) -> list[Rejected] | None:
        """A permanent error is a poison item in ``items``: retry them one by one; the ones that raise go to the DLQ."""
        log.warning("batch_poison_suspected", group=self.group, size=len(items), error=describe_error(exc))
        if len(items) == 1:
            return [Rejected.of(items[0], "handler", describe_error(exc))]
        out: list[Rejected] = []
        for item in items:
            sub = self([item])
            if sub is None:
                return None
            out.extend(sub)
        return out
