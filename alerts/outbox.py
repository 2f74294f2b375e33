"""The outbox: notifications written to Redis before the consumed offsets are committed.

Once a notification is in the outbox, a crash anywhere loses nothing: whichever process runs the
delivery loop next finds it due and sends it (the ledger keeps that to one send). An entry carries its
attempt count; it leaves the outbox when it was acknowledged (and recorded), or failed for good.

Keys: ``alerts:outbox:due`` (sorted set, key -> next attempt time in ms) and ``alerts:outbox:n:<key>``
(the entry JSON). Writing an entry that exists already keeps the existing one (a replayed batch does not
reset attempts).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from alerts.channels.base import Notification
from wirewatch.settings import Settings
from wirewatch.state import key


@dataclass(frozen=True)
class Entry:
    """A notification waiting to be sent, with what its acknowledgement settles."""

    notification: Notification
    marks: tuple[str, ...] = ()
    """Other ledger keys marked done with this one (a digest's stories' first-alert keys)."""
    attempts: int = 0

    @property
    def key(self) -> str:
        """The notification's idempotency key."""
        return self.notification.key

    def to_json(self) -> str:
        """Serialize."""
        return json.dumps({"n": self.notification.model_dump(mode="json"), "m": list(self.marks),
                           "a": self.attempts})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Entry:
        """Parse what :meth:`to_json` wrote."""
        d = json.loads(raw)
        return cls(Notification.model_validate(d["n"]), tuple(d["m"]), int(d["a"]))


class Outbox:
    """Durable pending notifications, shared by all alert workers."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._due = key(settings, "alerts", "outbox", "due")
        self._prefix = key(settings, "alerts", "outbox", "n", "")
        self._ttl_s = settings.alerts.ledger_ttl_s

    def put_many(self, entries: list[Entry], due_ms: int | None = None) -> None:
        """Add entries (keeping any that exist) due at ``due_ms`` (now by default), in one round trip."""
        if not entries:
            return
        pipe = self._r.pipeline(transaction=False)
        self.queue_put(pipe, entries, due_ms)
        pipe.execute()

    def queue_put(self, pipe: redis.client.Pipeline, entries: list[Entry], due_ms: int | None = None) -> None:
        """:meth:`put_many` as commands of ``pipe``: two per entry, the first's reply True when it was new."""
        due = due_ms if due_ms is not None else int(time.time() * 1000)
        for e in entries:
            pipe.set(self._prefix + e.key, e.to_json(), nx=True, ex=self._ttl_s)
            pipe.zadd(self._due, {e.key: due}, nx=True)

    def get(self, idem: str) -> Entry | None:
        """The entry, or None when it left the outbox."""
        raw = self._r.get(self._prefix + idem)
        return Entry.from_json(raw) if raw is not None else None

    def exists(self, idems: list[str]) -> list[bool]:
        """Per key: is an entry waiting?"""
        if not idems:
            return []
        pipe = self._r.pipeline(transaction=False)
        self.queue_exists(pipe, idems)
        return [bool(x) for x in pipe.execute()]

    def queue_exists(self, pipe: redis.client.Pipeline, idems: list[str]) -> None:
        """:meth:`exists` as commands of ``pipe``: one reply per key, truthy when waiting."""
        for i in idems:
            pipe.exists(self._prefix + i)

    def due(self, limit: int = 200, now_ms: int | None = None) -> list[str]:
        """Keys whose next attempt time has come, oldest first."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        found = self._r.zrangebyscore(self._due, 0, now, start=0, num=limit)
        return [k.decode() if isinstance(k, bytes) else str(k) for k in found]

    def reschedule(self, entry: Entry, due_ms: int) -> None:
        """Store the entry's new attempt count and move its next attempt to ``due_ms``."""
        pipe = self._r.pipeline(transaction=False)
        pipe.set(self._prefix + entry.key, entry.to_json(), ex=self._ttl_s)
        pipe.zadd(self._due, {entry.key: due_ms})
        pipe.execute()

    def defer(self, delays: dict[str, float], now_ms: int | None = None) -> None:
        """Move waiting entries' next attempt ``delays[key]`` seconds on, in one command; gone ones stay gone.

        For entries a process holds back (their destination at its limit): the oldest due entries are the
        ones every poller reads first, so an entry left due while it waits would hide everything behind it.
        """
        if not delays:
            return
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        self._r.zadd(self._due, {k: now + int(d * 1000) for k, d in delays.items()}, xx=True)

    def remove(self, idems: list[str]) -> None:
        """Take entries out (acknowledged and recorded, or failed for good)."""
        if not idems:
            return
        pipe = self._r.pipeline(transaction=False)
        pipe.zrem(self._due, *idems)
        pipe.delete(*(self._prefix + i for i in idems))
        pipe.execute()

    def pending(self) -> int:
        """How many entries wait."""
        return int(self._r.zcard(self._due))
