"""The delivery runner: sends outbox entries through their channels; decides retry, give up or done.

One runner per process. Entries reach it two ways: straight from the worker (:meth:`Dispatcher.accept`:
the outbox write and the ledger claims of a whole batch in one Redis round trip, then the sends start at
once) and from a poller that picks up whatever is due in the shared outbox (retries, and entries a dead
process left behind). Per entry:

    claim in the ledger -> channel.send -> ledger done -> Delivery "sent" recorded -> outbox entry removed

A send thread does only the channel call; what follows the acknowledgement runs in one settler thread
(:mod:`alerts.settle`) that marks a burst of acknowledgements done in one round trip and takes settled
entries out of the outbox in one more, so Redis costs a few round trips per batch instead of three per notification.

Retries: timeouts, connection failures, 5xx and 429 are retried with exponential backoff and full
jitter (never sooner than the server's Retry-After), up to ``alerts.max_attempts``; other 4xx and bad
targets fail at once. Every attempt is recorded. Isolation: each destination has at most
``per_channel_concurrency`` sends in flight and a send budget (the channel's ``budget`` per
``budget_per_s``); an entry over either waits in its destination's line without holding a thread, and
starts when a send to that destination ends. Its due time in the shared outbox moves on meanwhile
(``send_timeout_s`` at a time), as does that of any due entry the poller does not start: the poller reads
the oldest due entries, so a backlog for one slow destination never hides another subscription's retry or
an entry a dead process left behind.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

from alerts import channels
from alerts.channels import Channel, PermanentSendError, RetryableSendError
from alerts.channels._http import POOL
from alerts.ledger import NotificationLedger
from alerts.outbox import Entry, Outbox
from alerts.recorder import Recorder
from alerts.sendpolicy import Budget, WaitLine, backoff, destination
from alerts.settle import OnSent, Settler, delivery_record
from wirewatch import metrics
from wirewatch.log import describe_error, get_logger
from wirewatch.records import ChannelSpec, DeliveryStatus, Subscription
from wirewatch.settings import AlertsSettings, Settings

log = get_logger("alerts.delivery")
ChannelBuilder = Callable[[ChannelSpec, AlertsSettings], Channel]
class Dispatcher:
    """Sends outbox entries; see the module docstring. Thread-safe; ``start``/``stop`` run the poller."""

    def __init__(self, settings: Settings, client: redis.Redis, recorder: Recorder, *,
                 build: ChannelBuilder = channels.build, on_sent: OnSent | None = None,
                 poll_interval_s: float = 0.2) -> None:
        self.settings = settings
        POOL.configure(settings.api.url_allowlist)
        self.owner = uuid.uuid4().hex[:12]
        self._r = client
        self.ledger = NotificationLedger(client, settings)
        self.outbox = Outbox(client, settings)
        self._recorder = recorder
        self._build = build
        self._poll_s = poll_interval_s
        self._subs: dict[str, Subscription] = {}
        self._channels: dict[str, tuple[ChannelSpec, Channel]] = {}
        self._pool = ThreadPoolExecutor(settings.alerts.send_workers, thread_name_prefix="alerts-send")
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._per_dest: Counter[str] = Counter()
        self._budgets: dict[str, Budget] = {}
        self._waiting = WaitLine()  # held back by their destination's limits
        self._not_before: dict[str, float] = {}
        self._consumed_at: dict[str, float] = {}
        self._claimed_at: dict[str, float] = {}  # claimed by accept(): the sender need not claim again
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="alerts-outbox", daemon=True)
        self._settler = Settler(self.ledger, self.outbox, recorder, owner=self.owner, lock=self._lock,
                                inflight=self._inflight, consumed_at=self._consumed_at,
                                subscription=self.subscription, on_sent=on_sent, stop=self._stop)

    # -- control ----------------------------------------------------------------------------------------
    def set_subscriptions(self, subs: list[Subscription]) -> None:
        """Replace the known subscriptions (hot reload); channels whose spec changed are rebuilt."""
        with self._lock:
            self._subs = {s.id: s for s in subs}

    def subscription(self, sid: str) -> Subscription | None:
        """A known subscription."""
        return self._subs.get(sid)

    def start(self) -> Dispatcher:
        """Start the outbox poller and the settler."""
        self._poller.start()
        self._settler.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop polling, wait for sends in flight (bounded by their timeouts) and settle what they finished."""
        self._stop.set()
        self._poller.join(timeout_s)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._settler.join(timeout_s)
        for _, ch in self._channels.values():
            ch.close()

    def accept(self, entries: list[Entry], consumed_at: float | None = None) -> None:
        """Write entries to the outbox and claim them, in one round trip; the new ones start sending at once.

        Once this returned, every entry is durable (the caller may commit). An entry that was in the outbox
        already (a replayed batch) keeps its attempt count and due time and is left to the poller.
        Blocks while too many are pending. Raises Redis errors (nothing was started then).
        """
        self._wait_for_room()
        if not entries:
            return
        pipe = self._r.pipeline(transaction=False)
        self.outbox.queue_put(pipe, entries)
        for e in entries:
            self.ledger.queue_claim(pipe, e.key, self.owner)
        replies = pipe.execute()
        n = len(entries)
        now = time.monotonic()
        for e, new, claim in zip(entries, replies[0:2 * n:2], replies[2 * n:], strict=True):
            taken = bool(claim[0])
            if not new:  # already waiting: the poller sends it when due, claiming it again then
                if taken:
                    self._settler.give_back(e.key)
                continue
            if not taken:  # sent or being sent elsewhere: the poller sorts it out
                continue
            self._claimed_at[e.key] = now
            if consumed_at is not None:
                self._consumed_at[e.key] = consumed_at
            self._start(e.key, e)

    def submit(self, entries: list[Entry], consumed_at: float | None = None) -> None:
        """Start sending entries that are already in the outbox. Blocks while too many are pending."""
        self._wait_for_room()
        for e in entries:
            if consumed_at is not None:
                self._consumed_at[e.key] = consumed_at
            self._start(e.key, e)

    def _wait_for_room(self) -> None:
        limit = self.settings.alerts.max_pending
        while self.pending() >= limit and not self._stop.is_set():
            time.sleep(0.01)

    def pending(self) -> int:
        """Entries handed to this process's senders and not finished."""
        return len(self._inflight)

    def idle(self) -> bool:
        """True when nothing is in flight, settling or waiting for its destination here and nothing is due."""
        return not self._inflight and not self._settler.settling and not self._waiting and not self.outbox.due(1)

    # -- internals --------------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                due = self.outbox.due(500)
                metrics.ALERTS_OUTBOX_PENDING.set(self.outbox.pending())
            except (redis.RedisError, OSError) as exc:
                log.warning("outbox_poll_failed", error=str(exc))
                continue
            now = time.monotonic()
            later: dict[str, float] = {}  # due but not started now: moved on, so the next poll reads further
            for k in due:
                if k in self._waiting:
                    later[k] = self.settings.alerts.send_timeout_s
                elif (not_before := self._not_before.get(k, 0.0)) > now:
                    later[k] = not_before - now
                else:
                    self._start(k, None)
            for dest in self._waiting.destinations():
                self._wake(dest)  # a budget that refilled has no send ending to wake its line
            try:
                self.outbox.defer(later)
            except (redis.RedisError, OSError) as exc:
                log.warning("outbox_defer_failed", count=len(later), error=str(exc))
            self._prune(now, set(due))

    def _prune(self, now: float, due: set[str]) -> None:
        """Forget waits that have passed and send times of entries another process settled."""
        for k in [k for k, t in list(self._not_before.items()) if t <= now and k not in due]:
            self._not_before.pop(k, None)
        stale = now - self.ledger.lease_s
        for k in [k for k, t in list(self._claimed_at.items()) if t < stale and k not in self._inflight]:
            self._claimed_at.pop(k, None)
        if len(self._consumed_at) > 100_000:  # entries sent elsewhere never come back to pop theirs
            cutoff = now - 3600
            for k in [k for k, t in list(self._consumed_at.items()) if t < cutoff]:
                self._consumed_at.pop(k, None)

    def _start(self, key: str, entry: Entry | None) -> None:
        with self._lock:
            if key in self._inflight or key in self._settler.settling:
                return
            self._inflight.add(key)
        self._pool.submit(self._run, key, entry)

    def _run(self, key: str, entry: Entry | None) -> None:
        try:
            self._attempt(key, entry)
        except Exception as exc:  # noqa: BLE001 - the entry stays in the outbox; the poller tries again
            log.error("delivery_attempt_error", key=key, error=describe_error(exc))
            self._not_before[key] = time.monotonic() + 1.0
        finally:
            with self._lock:
                self._inflight.discard(key)

    def _attempt(self, key: str, entry: Entry | None) -> None:
        entry = entry or self.outbox.get(key)
        if entry is None:  # settled by someone else meanwhile
            self.outbox.remove([key])
            return
        n = entry.notification
        sub = self._subs.get(n.subscription_id)
        if sub is None:
            self._settler.settle(entry, DeliveryStatus.SUPPRESSED, "subscription_deleted", "")
            return
        dest = destination(sub.channel)
        with self._lock:
            busy = self._per_dest[dest] >= self.settings.alerts.per_channel_concurrency
            if not busy:
                self._per_dest[dest] += 1
                budget = self._budgets.get(dest)
                if budget is None:
                    cls = channels.REGISTRY[sub.channel.type]
                    budget = self._budgets[dest] = Budget(cls.budget, cls.budget_per_s)
                wait = budget.take()
        if busy:
            self._waiting.add(dest, key)  # started when a send to dest ends
            return
        requeued = False
        try:
            if wait > 0:
                self._waiting.add(dest, key)
                requeued = True  # no token for anyone of dest: waking its line now would find none either
                return
            claimed = self._claimed_at.pop(key, None)
            fresh = claimed is not None and time.monotonic() - claimed < self.ledger.lease_s / 2
            if not fresh and not self.ledger.claim(key, self.owner):
                if self.ledger.states([key])[0] == "done":
                    self.outbox.remove([key])  # sent by someone whose outbox cleanup did not finish
                else:
                    self._not_before[key] = time.monotonic() + 1.0  # a live claim elsewhere
                return
            self._send(entry, sub)
        finally:
            with self._lock:
                self._per_dest[dest] -= 1
            if not requeued:
                self._wake(dest)

    def _wake(self, dest: str) -> None:
        """Start the longest-waiting entry of ``dest`` if it has a free send slot."""
        with self._lock:
            if self._per_dest[dest] >= self.settings.alerts.per_channel_concurrency:
                return
        key = self._waiting.next(dest)
        if key is not None:
            self._start(key, None)

    def _channel(self, sub: Subscription) -> Channel:
        with self._lock:
            cached = self._channels.get(sub.id)
            if cached is not None and cached[0] == sub.channel:
                return cached[1]
        ch = self._build(sub.channel, self.settings.alerts)
        with self._lock:
            old = self._channels.get(sub.id)
            self._channels[sub.id] = (sub.channel, ch)
        if old is not None:
            old[1].close()
        return ch

    def _send(self, entry: Entry, sub: Subscription) -> None:
        n = entry.notification
        attempt = entry.attempts + 1
        kind = sub.channel.type.value
        started = time.monotonic()
        try:
            response = self._channel(sub).send(n)
        except RetryableSendError as exc:
            self._failed(entry, sub, attempt, exc.detail, retry_after=exc.retry_after_s, retryable=True)
            return
        except PermanentSendError as exc:
            self._failed(entry, sub, attempt, exc.detail, retry_after=None, retryable=False)
            return
        finally:
            metrics.ALERTS_SEND_SECONDS.labels(kind).observe(time.monotonic() - started)
        self._settler.acked(entry, sub, response, attempt)  # from here on our poller must not pick it up again

    def _failed(self, entry: Entry, sub: Subscription, attempt: int, detail: str, *,
                retry_after: float | None, retryable: bool) -> None:
        n, s = entry.notification, self.settings.alerts
        kind = sub.channel.type.value
        self._consumed_at.pop(n.key, None)
        if retryable and attempt < s.max_attempts:
            delay = backoff(attempt, s, retry_after)
            self.outbox.reschedule(Entry(n, entry.marks, attempt), int((time.time() + delay) * 1000))
            self.ledger.release(n.key, self.owner)
            metrics.ALERTS_ATTEMPTS.labels(kind, "retry").inc()
            log.warning("notification_retry", subscription_id=n.subscription_id, channel=kind, attempt=attempt,
                        delay_s=round(delay, 2), error=detail)
            self._recorder.record(delivery_record(n, DeliveryStatus.FAILED, f"retry in {delay:.1f}s: {detail}",
                                                 attempts=attempt, channel=kind))
            return
        outcome = "gave_up" if retryable else "permanent"
        metrics.ALERTS_ATTEMPTS.labels(kind, outcome).inc()
        reason = (f"gave up after {attempt} attempts: {detail}" if retryable else f"permanent: {detail}")
        log.error("notification_failed", subscription_id=n.subscription_id, channel=kind, attempts=attempt,
                  error=detail)
        self._settler.settle(entry, DeliveryStatus.FAILED, reason, "", attempts=attempt, release=True)
