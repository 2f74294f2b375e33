"""Durable, shared definitions (topics, subscriptions, feeds) in Redis, with change notification.

Each kind is one Redis hash ``<prefix>reg:<kind>`` (id -> record JSON) plus a revision counter
``<prefix>reg:<kind>:rev`` bumped atomically with every write. The API writes; workers read everything
once and then follow the revision with a :class:`Watcher`, so a change reaches every running worker within
one poll interval (1 s by default) without a restart. Redis runs with AOF, so writes are durable.
Config-declared records are :meth:`Registry.seed`-ed: added when absent, never overwriting an API edit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, Literal, TypeVar

import redis
from pydantic import ValidationError

from wirewatch.log import get_logger
from wirewatch.records import Feed, Record, RecordError, Subscription, Topic, decode
from wirewatch.settings import Settings
from wirewatch.state import key

log = get_logger("registry")
R = TypeVar("R", bound=Record)
Kind = Literal["topics", "subscriptions", "feeds"]
KINDS: dict[str, type[Record]] = {"topics": Topic, "subscriptions": Subscription, "feeds": Feed}

_PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
"""
_PUT_IF_ABSENT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return redis.call('INCR', KEYS[2]) end
return 0
"""
_DEL = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then return redis.call('INCR', KEYS[2]) end
return 0
"""


class Registry(Generic[R]):
    """All records of one kind. Records must have an ``id`` field."""

    def __init__(self, client: redis.Redis, settings: Settings, kind: Kind, cls: type[R]) -> None:
        self.kind = kind
        self.cls = cls
        self._client = client
        self._hash = key(settings, "reg", kind)
        self._rev = key(settings, "reg", kind, "rev")
        self._put = client.register_script(_PUT)
        self._put_absent = client.register_script(_PUT_IF_ABSENT)
        self._del = client.register_script(_DEL)

    def put(self, record: R) -> R:
        """Create or replace ``record`` (by id) and bump the revision."""
        self._put(keys=[self._hash, self._rev], args=[record.id, record.to_json()])  # type: ignore[attr-defined]
        return record

    def put_if_absent(self, record: R) -> bool:
        """Create ``record`` only if its id is unused; True when it was created."""
        rid = record.id  # type: ignore[attr-defined]
        return bool(self._put_absent(keys=[self._hash, self._rev], args=[rid, record.to_json()]))

    def seed(self, records: Iterable[R]) -> int:
        """Add config-declared records that are absent; returns how many were added.

        Raises:
            RecordError: naming the record and its first bad field when any record fails its own checks
                (one built without validation, or under an older, laxer model); nothing is written then.
        """
        checked = [self._checked(r) for r in records]
        return sum(1 for r in checked if self.put_if_absent(r))

    def _checked(self, record: R) -> R:
        try:
            return self.cls.model_validate(record.model_dump())
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "<root>"
            rid = getattr(record, "id", "?")
            raise RecordError(f"{self.cls.kind} {rid!r}: field {loc!r}: {first['msg']}") from exc

    def get(self, rid: str) -> R | None:
        """The record with id ``rid``, or None."""
        raw = self._client.hget(self._hash, rid)
        return None if raw is None else decode(self.cls, raw)

    def delete(self, rid: str) -> bool:
        """Remove the record; True when it existed."""
        return bool(self._del(keys=[self._hash, self._rev], args=[rid]))

    def all(self) -> list[R]:
        """Every readable record, sorted by id. Unreadable entries are logged and skipped, never fatal."""
        out = []
        for rid, raw in sorted(self._client.hgetall(self._hash).items()):
            try:
                out.append(decode(self.cls, raw))
            except RecordError as exc:
                name = rid.decode(errors="replace") if isinstance(rid, bytes) else rid
                log.error("registry_record_unreadable", kind=self.kind, id=name, error=str(exc))
        return out

    def revision(self) -> int:
        """A counter that grows with every write of this kind."""
        return int(self._client.get(self._rev) or 0)

    def snapshot(self) -> tuple[int, list[R]]:
        """Revision and records read together (revision first, so a racing write is seen next poll)."""
        rev = self.revision()
        return rev, self.all()


class Watcher(Generic[R]):
    """Calls ``on_change(records)`` once at start and whenever the registry's revision changes.

    Runs in a daemon thread polling every ``interval_s``. A Redis outage is logged and retried; the last
    good records stay in force meanwhile. Exceptions from ``on_change`` are logged, never fatal.
    """

    def __init__(self, registry: Registry[R], on_change: Callable[[list[R]], None], interval_s: float = 1.0) -> None:
        self._registry = registry
        self._on_change = on_change
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{registry.kind}", daemon=True)
        self._seen = -1

    def start(self) -> Watcher[R]:
        """Load once synchronously (so the caller starts with current records), then follow in the background."""
        self.poll()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()

    def poll(self) -> bool:
        """Check once; True when records changed and ``on_change`` was called."""
        try:
            rev = self._registry.revision()
            if rev == self._seen:
                return False
            rev, records = self._registry.snapshot()
        except (redis.RedisError, OSError) as exc:
            log.warning("registry_poll_failed", kind=self._registry.kind, error=str(exc))
            return False
        try:
            self._on_change(records)
        except Exception as exc:  # noqa: BLE001 - a bad definition must not kill the worker
            log.error(
                "registry_apply_failed", kind=self._registry.kind, revision=rev, error=f"{type(exc).__name__}: {exc}"
            )
        self._seen = rev
        log.info("registry_loaded", kind=self._registry.kind, revision=rev, count=len(records))
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()


def topics(client: redis.Redis, settings: Settings) -> Registry[Topic]:
    """The topics registry."""
    return Registry(client, settings, "topics", Topic)


def subscriptions(client: redis.Redis, settings: Settings) -> Registry[Subscription]:
    """The subscriptions registry."""
    return Registry(client, settings, "subscriptions", Subscription)


def feeds(client: redis.Redis, settings: Settings) -> Registry[Feed]:
    """The feeds registry."""
    return Registry(client, settings, "feeds", Feed)
