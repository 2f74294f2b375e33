"""The settler: what follows a send's end, a burst at a time, in one thread.

After a channel acknowledged a send: mark its ledger claim done -> count and log it -> record the Delivery
"sent" -> once that record is durable, take the entry out of the outbox. After a final failure or a
suppression the same, giving the claim back. Bursts share round trips: one ``done_many`` for every
acknowledgement waiting, one outbox removal for every entry settled.

Between the send's end and its removal from the outbox a key is in :attr:`Settler.settling`, so that the
dispatcher's poller does not start it again; the dispatcher checks that set and its own in-flight set under
one shared lock.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import redis

from alerts.channels import Notification
from alerts.ledger import NotificationLedger
from alerts.outbox import Entry, Outbox
from alerts.recorder import Recorder, delivery_id
from wirewatch import metrics
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Delivery, DeliveryStatus, Subscription, utcnow

log = get_logger("alerts.delivery")
OnSent = Callable[[Entry, float, float | None], None]
"""Called after each acknowledgement with the entry, the ack time and the time its match was consumed
(``time.monotonic()``; None for retries and entries picked up from the outbox)."""


class Acked(NamedTuple):
    """A send the channel acknowledged, waiting to be marked done, counted and recorded."""

    entry: Entry
    sub: Subscription
    response: str
    attempt: int
    at: float


class Gone(NamedTuple):
    """A key the settler takes out of the outbox (its record is durable) and/or whose claim it gives back."""

    key: str
    remove: bool
    release: bool


class Settler:
    """Settles finished sends for one dispatcher (its ledger owner, lock, in-flight set and stop event)."""

    def __init__(self, ledger: NotificationLedger, outbox: Outbox, recorder: Recorder, *, owner: str,
                 lock: threading.Lock, inflight: set[str], consumed_at: dict[str, float],
                 subscription: Callable[[str], Subscription | None], on_sent: OnSent | None,
                 stop: threading.Event) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self._recorder = recorder
        self.owner = owner
        self._lock = lock
        self._inflight = inflight
        self._consumed_at = consumed_at
        self._subscription = subscription
        self._on_sent = on_sent
        self._stop = stop
        self.settling: set[str] = set()  # finished here, waiting for the audit record before leaving the outbox
        # the work: acknowledged sends (Acked) and keys to take out of the outbox and/or release (Gone)
        self._q: queue.SimpleQueue[Acked | Gone] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="alerts-settle", daemon=True)

    def start(self) -> None:
        """Start the settler thread."""
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        """Wait for the thread; it ends once stopping and nothing is in flight or settling."""
        self._thread.join(timeout_s)

    def acked(self, entry: Entry, sub: Subscription, response: str, attempt: int) -> None:
        """The channel acknowledged ``entry``: from here on it is the settler's, never the poller's."""
        with self._lock:
            self.settling.add(entry.notification.key)
        self._q.put(Acked(entry, sub, response, attempt, time.monotonic()))

    def give_back(self, key: str) -> None:
        """Release the claim on ``key`` without touching its outbox entry."""
        self._q.put(Gone(key, remove=False, release=True))

    def settle(self, entry: Entry, status: DeliveryStatus, reason: str, response: str, attempts: int = 0,
               release: bool = False) -> None:
        """Record the outcome; once the record is durable, the entry leaves the outbox.

        A failed entry's claim is given back then, so a later article of the story may try again. Until
        then our live claim keeps other processes off it and :attr:`settling` keeps our own poller off it.
        """
        n = entry.notification
        sub = self._subscription(n.subscription_id)
        d = delivery_record(n, status, reason, attempts=attempts, response=response,
                            channel=sub.channel.type.value if sub else "")
        with self._lock:
            self.settling.add(n.key)
        self._recorder.record(d, then=lambda: self._q.put(Gone(n.key, remove=True, release=release)))

    def _loop(self) -> None:
        """Marks acknowledged sends done and takes settled entries out of the outbox, a burst at a time."""
        while True:
            work = _drain(self._q, wait_s=0.2)  # wakes as soon as there is work
            if not work and self._stop.is_set() and not self._inflight and not self.settling:
                return
            acked = [w for w in work if isinstance(w, Acked)]
            gone = [w for w in work if isinstance(w, Gone)]
            try:
                if acked:
                    self._sent(acked)
                if gone:
                    self._remove(gone)
            except (redis.RedisError, OSError) as exc:  # keep them: nothing is sent twice while we retry
                log.warning("settle_failed", count=len(work), error=str(exc))
                for w in work:
                    self._q.put(w)
                time.sleep(0.5)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop settling; the poller retries the rest
                log.error("settle_error", count=len(work), error=describe_error(exc))

    def _sent(self, acked: list[Acked]) -> None:
        self.ledger.done_many([([a.entry.key, *a.entry.marks], f"{self.owner}:{a.attempt}") for a in acked])
        for entry, sub, response, attempt, at in acked:
            n, kind = entry.notification, sub.channel.type.value
            try:
                metrics.ALERTS_ATTEMPTS.labels(kind, "sent").inc()
                consumed = self._consumed_at.pop(n.key, None)
                if consumed is not None:
                    metrics.ALERTS_LATENCY_SECONDS.observe(at - consumed)
                    metrics.observe_hop("deliver", at - consumed)  # match consumed (after classification) to ack
                lead = n.items[0] if n.items else None
                if n.kind == "alert" and lead is not None and lead.published_at is not None:
                    metrics.observe_hop("end_to_end", time.time() - lead.published_at.timestamp())
                if self._on_sent is not None:
                    self._on_sent(entry, at, consumed)
                log.info("notification_sent", subscription_id=n.subscription_id, story_id=n.story_id, kind=n.kind,
                         channel=kind, attempts=attempt)
            except Exception as exc:  # noqa: BLE001 - bookkeeping only: the send is done and is settled below
                log.error("sent_bookkeeping_failed", key=n.key, error=describe_error(exc))
            self.settle(entry, DeliveryStatus.SENT, n.kind, response, attempts=attempt)

    def _remove(self, gone: list[Gone]) -> None:
        """Take settled entries out of the outbox and give back the claims that must be given back."""
        keys = [g.key for g in gone if g.remove]
        self.outbox.remove(keys)
        for g in gone:
            if g.release:
                self.ledger.release(g.key, self.owner)
        with self._lock:
            self.settling.difference_update(keys)


def delivery_record(n: Notification, status: DeliveryStatus, reason: str, *, attempts: int = 0,
                    response: str = "", channel: str = "") -> Delivery:
    """The audit record of one attempt or outcome of ``n``."""
    return Delivery(id=delivery_id(), subscription_id=n.subscription_id, topic_id=n.topic_id,
                    story_id=n.story_id or ",".join(n.story_ids)[:500], article_ids=n.article_ids[:100],
                    status=status, reason=reason[:1000], attempts=attempts, idempotency_key=n.key,
                    sent_at=utcnow() if status == DeliveryStatus.SENT else None, response=response[:300],
                    channel=channel)


def _drain(q: queue.SimpleQueue[Any], wait_s: float = 0.0) -> list[Any]:
    """Everything in ``q`` now, waiting up to ``wait_s`` for the first item."""
    out: list[Any] = []
    try:
        out.append(q.get(timeout=wait_s) if wait_s else q.get_nowait())
        while True:
            out.append(q.get_nowait())
    except queue.Empty:
        return out
