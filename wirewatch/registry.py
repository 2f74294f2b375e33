"""Durable, shared definitions (topics, subscriptions, feeds) in Redis, with change notification.

Each kind is one Redis hash ``<prefix>reg:<kind>`` (id -> record JSON) plus a revision counter
``<prefix>reg:<kind>:rev`` bumped atomically with every write, and a version per record in
``<prefix>reg:<kind>:ver`` (id -> count of writes, kept when the record is deleted so a re-created record
never reuses an old version). Read-modify-write goes through :meth:`Registry.update`: the write succeeds only
if the version is still the one read (compare-and-set in one script), else it reads again, so concurrent
writers never lose an edit or share a version; the API's ETags are these versions.

The API writes; workers read everything once and then follow the revision with a :class:`Watcher`, so a
change reaches every running worker within one poll interval (1 s by default) without a restart. Redis runs
with AOF, so writes are durable.
Config-declared records are :meth:`Registry.seed`-ed: added when absent, never overwriting an API edit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, Literal, TypeVar

import redis
from pydantic import ValidationError

from wirewatch.log import describe_error, get_logger
from wirewatch.records import Feed, Record, RecordError, Subscription, Topic, decode
from wirewatch.settings import Settings
from wirewatch.state import key

log = get_logger("registry")
R = TypeVar("R", bound=Record)
Kind = Literal["topics", "subscriptions", "feeds"]
KINDS: dict[str, type[Record]] = {"topics": Topic, "subscriptions": Subscription, "feeds": Feed}

_PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
"""
_PUT_IF_ABSENT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('INCR', KEYS[2])
  return redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
end
return 0
"""
# Write ARGV[2] as record ARGV[1] only while it exists at version ARGV[3]: {1, new version} or {0, current}
# (-1 when absent). A record written before versions were kept is at version 0.
_PUT_IF_VERSION = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {0, -1} end
local current = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if current ~= tonumber(ARGV[3]) then return {0, current} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return {1, redis.call('HINCRBY', KEYS[3], ARGV[1], 1)}
"""
_GET_VERSIONED = """
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1]) or '0'}
"""
_DEL = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then return redis.call('INCR', KEYS[2]) end
return 0
"""


class Conflict(RuntimeError):
    """A conditional write found the record at another version than expected: someone wrote in between."""

    def __init__(self, kind: str, rid: str, expected: int, current: int) -> None:
        self.kind, self.rid, self.expected, self.current = kind, rid, expected, current
        now = "gone" if current < 0 else f"at version {current}"
        super().__init__(f"{kind} {rid!r} is {now}, not {expected}: it changed meanwhile; read it again")


class Contended(Conflict):
    """:meth:`Registry.update` lost the race every time it tried."""

    def __init__(self, kind: str, rid: str, attempts: int) -> None:
        RuntimeError.__init__(self, f"{kind} {rid!r} kept changing during {attempts} attempts to update it; "
                                    "try again")
        self.kind, self.rid, self.expected, self.current = kind, rid, -1, -1


class Registry(Generic[R]):
    """All records of one kind. Records must have an ``id`` field."""

    def __init__(self, client: redis.Redis, settings: Settings, kind: Kind, cls: type[R]) -> None:
        self.kind = kind
        self.cls = cls
        self._client = client
        self._hash = key(settings, "reg", kind)
        self._rev = key(settings, "reg", kind, "rev")
        self._ver = key(settings, "reg", kind, "ver")
        self._put = client.register_script(_PUT)
        self._put_absent = client.register_script(_PUT_IF_ABSENT)
        self._put_if = client.register_script(_PUT_IF_VERSION)
        self._get_versioned = client.register_script(_GET_VERSIONED)
        self._del = client.register_script(_DEL)

    def put(self, record: R) -> R:
        """Create or replace ``record`` (by id) unconditionally and bump the revision.

        Only for writes that do not depend on what was stored; read-modify-write is :meth:`update`.
        """
        self._put(keys=[self._hash, self._rev, self._ver], args=[_id(record), record.to_json()])
        return record

    def put_if_absent(self, record: R) -> bool:
        """Create ``record`` only if its id is unused; True when it was created."""
        return bool(self._put_absent(keys=[self._hash, self._rev, self._ver], args=[_id(record), record.to_json()]))

    def put_if_version(self, record: R, expected: int) -> int:
        """Replace ``record`` only while the stored one is at version ``expected``; returns the new version.

        Raises:
            Conflict: when the stored record is at another version, or gone.
        """
        ok, current = self._put_if(keys=[self._hash, self._rev, self._ver],
                                   args=[_id(record), record.to_json(), expected])
        if not ok:
            raise Conflict(self.cls.kind, _id(record), expected, int(current))
        return int(current)

    def get_versioned(self, rid: str) -> tuple[R, int] | None:
        """The record with id ``rid`` and its version, read together; None when absent."""
        raw, version = self._get_versioned(keys=[self._hash, self._ver], args=[rid])
        return None if raw is None else (decode(self.cls, raw, stored=True), int(version))

    def update(self, rid: str, change: Callable[[R], R], *, expect: int | None = None,
               attempts: int = 50) -> tuple[R, int] | None:
        """Read record ``rid``, write ``change(record)`` back if nobody wrote in between; None when absent.

        ``change`` gets the current record and returns the new one (the same object: nothing to write); it
        may raise to refuse, and may run more than once. With ``expect`` (a version the caller read earlier,
        an API client's If-Match) there is one try; without it a lost race reads again.

        Returns:
            The record as stored and its version.

        Raises:
            Conflict: the record is not (or no longer) at version ``expect``.
            Contended: every one of ``attempts`` tries lost the race.
        """
        for _ in range(attempts if expect is None else 1):
            got = self.get_versioned(rid)
            if got is None:
                return None
            current, version = got
            if expect is not None and version != expect:
                raise Conflict(self.cls.kind, rid, expect, version)
            new = change(current)
            if new is current:
                return current, version
            try:
                return new, self.put_if_version(new, version)
            except Conflict:
                if expect is not None:
                    raise
        raise Contended(self.cls.kind, rid, attempts)

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
        return None if raw is None else decode(self.cls, raw, stored=True)

    def delete(self, rid: str) -> bool:
        """Remove the record; True when it existed."""
        return bool(self._del(keys=[self._hash, self._rev], args=[rid]))

    def all(self) -> list[R]:
        """Every readable record, sorted by id. Unreadable entries are logged and skipped, never fatal."""
        out = []
        for rid, raw in sorted(self._client.hgetall(self._hash).items()):
            try:
                out.append(decode(self.cls, raw, stored=True))
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
                "registry_apply_failed", kind=self._registry.kind, revision=rev, error=describe_error(exc)
            )
        self._seen = rev
        log.info("registry_loaded", kind=self._registry.kind, revision=rev, count=len(records))
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()


def _id(record: Record) -> str:
    rid: str = record.id  # type: ignore[attr-defined]
    return rid


def topics(client: redis.Redis, settings: Settings) -> Registry[Topic]:
    """The topics registry."""
    return Registry(client, settings, "topics", Topic)


def subscriptions(client: redis.Redis, settings: Settings) -> Registry[Subscription]:
    """The subscriptions registry."""
    return Registry(client, settings, "subscriptions", Subscription)


def feeds(client: redis.Redis, settings: Settings) -> Registry[Feed]:
    """The feeds registry."""
    return Registry(client, settings, "feeds", Feed)
