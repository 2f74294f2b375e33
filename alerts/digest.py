"""Held stories and the digest scheduler.

Stories held for a subscription (digest mode, quiet hours, rate-limit overflow) wait in Redis:
``alerts:held:<subscription>`` (sorted set of ``<topic> US <story>``) and ``alerts:held:due`` (subscription ->
when its digest is due, the earliest one asked for). The scheduler, in every worker, turns a due queue
into one digest notification in the outbox, then removes exactly the stories it took. A crash between
the two builds the same digest again (same key: the ledger sends it once).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from alerts.channels import Item, Notification
from alerts.ledger import NotificationLedger, idempotency_key
from alerts.outbox import Entry, Outbox
from alerts.rules import quiet_until
from alerts.stories import Story, StoryFolder
from wirewatch import metrics
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Subscription
from wirewatch.settings import Settings
from wirewatch.state import delete_if_ours, key

log = get_logger("alerts.digest")
RETRY_S = 60.0
"""How long a subscription whose digest failed to build waits before the next try."""
_SETTLE = """
redis.call('ZREM', KEYS[1], unpack(ARGV, 2))
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""


@dataclass(frozen=True)
class Held:
    """A story held for a subscription until ``due``."""

    subscription_id: str
    topic_id: str
    story_id: str
    due: datetime


class DigestQueue:
    """Held stories per subscription, shared by all workers."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._s = settings
        self._due = key(settings, "alerts", "held", "due")
        self._settle = client.register_script(_SETTLE)

    def _q(self, sub_id: str) -> str:
        return key(self._s, "alerts", "held", sub_id)

    def hold(self, items: list[Held]) -> None:
        """Add stories (idempotent) and bring each subscription's due time forward if needed."""
        if not items:
            return
        now_ms = int(time.time() * 1000)
        pipe = self._r.pipeline(transaction=False)
        for h in items:
            pipe.zadd(self._q(h.subscription_id), {f"{h.topic_id}\x1f{h.story_id}": now_ms}, nx=True)
            pipe.zadd(self._due, {h.subscription_id: int(h.due.timestamp() * 1000)}, lt=True)
        pipe.execute()

    def contains(self, pairs: list[tuple[str, str, str]]) -> list[bool]:
        """Per (subscription, topic, story): is the story held for it?"""
        if not pairs:
            return []
        pipe = self._r.pipeline(transaction=False)
        self.queue_contains(pipe, pairs)
        return [v is not None for v in pipe.execute()]

    def queue_contains(self, pipe: redis.client.Pipeline, pairs: list[tuple[str, str, str]]) -> None:
        """:meth:`contains` as commands of ``pipe``: one reply per pair, not None when held."""
        for sub, topic, story in pairs:
            pipe.zscore(self._q(sub), f"{topic}\x1f{story}")

    def due(self, now: datetime) -> list[str]:
        """Subscriptions whose digest is due."""
        found = self._r.zrangebyscore(self._due, 0, int(now.timestamp() * 1000), start=0, num=100)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in found]

    def peek(self, sub_id: str) -> list[tuple[str, str]]:
        """The (topic, story) pairs held for a subscription, oldest first."""
        out = []
        for m in self._r.zrange(self._q(sub_id), 0, 999):
            topic, _, story = (m.decode() if isinstance(m, bytes) else str(m)).partition("\x1f")
            out.append((topic, story))
        return out

    def postpone(self, sub_id: str, due: datetime) -> None:
        """Move a subscription's due time (e.g. to the end of its quiet hours)."""
        self._r.zadd(self._due, {sub_id: int(due.timestamp() * 1000)})

    def settle(self, sub_id: str, taken: list[tuple[str, str]]) -> None:
        """Remove the stories a digest took; clear the due time when nothing else is held."""
        members = [f"{t}\x1f{s}" for t, s in taken]
        if members:
            self._settle(keys=[self._q(sub_id), self._due], args=[sub_id, *members])
        else:
            self._settle(keys=[self._q(sub_id), self._due], args=[sub_id, "\x00"])


def digest_entry(sub: Subscription, stories: list[Story], topic_name: str) -> Entry:
    """One digest notification carrying ``stories``; its acknowledgement settles each story's first alert."""
    ids = sorted(s.id for s in stories)
    digest_key = idempotency_key(sub.id, "digest", hashlib.sha1("\x1f".join(ids).encode()).hexdigest())
    items = tuple(Item(title=s.title, url=s.url, source=", ".join(s.sources[:3]), summary=s.summary[:500])
                  for s in stories)
    n = Notification(key=digest_key, kind="digest", subscription_id=sub.id, topic_id=sub.topic_id,
                     topic_name=topic_name, items=items, story_ids=tuple(ids),
                     article_ids=tuple(a for s in stories for a in s.article_ids[:5]),
                     sources=tuple(dict.fromkeys(src for s in stories for src in s.sources)),
                     article_count=sum(s.article_count for s in stories), reason=f"{len(stories)} held stories")
    return Entry(n, marks=tuple(idempotency_key(sub.id, s.id) for s in stories))


class DigestScheduler:
    """Every ``interval_s``, turns due held queues into digests and hands them to ``submit``."""

    LOCK_MS = 30_000
    """How long one worker's hold on a subscription's digest lasts if it dies while building."""

    def __init__(self, settings: Settings, client: redis.Redis, *, stories: StoryFolder,
                 subscription: Callable[[str], Subscription | None], topic_name: Callable[[str], str],
                 submit: Callable[[list[Entry]], None], interval_s: float = 1.0) -> None:
        self.queue = DigestQueue(client, settings)
        self._r = client
        self._s = settings
        self._token = uuid.uuid4().hex
        self._outbox = Outbox(client, settings)
        self._ledger = NotificationLedger(client, settings)
        self._stories = stories
        self._subscription = subscription
        self._topic_name = topic_name
        self._submit = submit
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts-digest", daemon=True)

    def start(self) -> DigestScheduler:
        """Start the background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once(datetime.now(UTC))
            except (redis.RedisError, OSError) as exc:
                log.warning("digest_run_failed", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - the thread is every digest's only way out: it must live
                log.error("digest_run_error", error=describe_error(exc))

    def run_once(self, now: datetime) -> int:
        """Build every due digest; returns how many were handed over.

        A subscription whose digest cannot be built (a bug, a record that fails at run time) is logged with
        its id, counted, and its due time moved ``RETRY_S`` on, so it neither blocks the queue's head nor
        costs another subscription its digest. Redis errors propagate (the whole pass is retried).
        """
        built = 0
        for sub_id in self.queue.due(now):
            # one builder per subscription at a time across workers; a crashed holder's lock expires
            lock = key(self._s, "alerts", "held", "lock", sub_id)
            if not self._r.set(lock, self._token, nx=True, px=self.LOCK_MS):
                continue
            try:
                built += self._build(sub_id, now)
            except (redis.RedisError, OSError):
                raise
            except Exception as exc:  # noqa: BLE001 - see the docstring
                log.error("subscription_failed", subscription_id=sub_id, stage="digest",
                          error=describe_error(exc))
                metrics.ALERTS_SUBSCRIPTION_ERRORS.labels("digest").inc()
                self.queue.postpone(sub_id, now + timedelta(seconds=RETRY_S))
            finally:
                delete_if_ours(self._r, lock, self._token)  # never a lock another worker took after ours expired
        return built

    def _build(self, sub_id: str, now: datetime) -> int:
        """Turn one subscription's held stories into a digest in the outbox; 1 when one was built."""
        sub = self._subscription(sub_id)
        taken = self.queue.peek(sub_id)
        if sub is None:
            self.queue.settle(sub_id, taken)
            return 0
        quiet_end = quiet_until(sub.quiet_hours, now)
        if quiet_end is not None:
            self.queue.postpone(sub_id, quiet_end)
            return 0
        stories = [s for t, sid in taken if (s := self._stories.get(t, sid)) is not None]
        states = self._ledger.states([idempotency_key(sub.id, s.id) for s in stories])
        stories = [s for s, st in zip(stories, states, strict=True) if st != "done"]
        built = 0
        if stories:
            entry = digest_entry(sub, stories, self._topic_name(sub.topic_id))
            self._outbox.put_many([entry])
            self._submit([entry])
            metrics.ALERTS_DIGESTS.labels("due").inc()
            log.info("digest_built", subscription_id=sub_id, stories=len(stories))
            built = 1
        self.queue.settle(sub_id, taken)
        return built
