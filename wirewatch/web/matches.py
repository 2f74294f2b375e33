"""Recent matches for the API: a bounded Redis store, a fan-out hub for live streams, and the consumer feeding both.

The consumer follows ``kafka.topics.matches`` without a consumer group (nothing is committed; it is a reader,
not a worker): it starts where this API last stopped reading (offsets kept in Redis, so a restart loses
nothing for the listing) or, the first time, at the end. Each match goes to

* the store: ``api:m:data`` (match key -> match JSON without its vector), the time index ``api:m:all`` and one
  index per topic ``api:m:t:<topic>`` (sorted sets scored by classification time), trimmed to
  ``api.recent_matches``; plus per-5-minute counts per topic for the dashboard chart;
* the :class:`Hub`, which hands it to every connected stream client following its topic.

Several API processes may run: the store's writes are idempotent (a match key is stored once).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from redis import Redis

from wirewatch import metrics
from wirewatch.bus import client_config
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Match, RecordError, decode
from wirewatch.settings import Settings
from wirewatch.state import key

log = get_logger("api.matches")
BUCKET_S = 300
COUNT_TTL_S = 8 * 86400


def match_key(m: Match) -> str:
    """The store's key of a match: topic and article."""
    return f"{m.topic_id}:{m.article.id}"


def _score(m: Match) -> float:
    # Milliseconds times 1000 plus a hash tail keeps scores distinct for ties and exact within 2**53.
    ms = int(m.classified_at.timestamp() * 1000)
    return float(ms * 1000 + zlib.crc32(match_key(m).encode()) % 1000)


def encode_cursor(score: float, member: str) -> str:
    """An opaque cursor for the item after (older than) ``(score, member)``."""
    return base64.urlsafe_b64encode(json.dumps([score, member]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The position in a cursor. Raises ValueError for a cursor this API did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = json.loads(raw)
        return float(score), str(member)
    except Exception as exc:  # noqa: BLE001 - any malformed cursor is one error for the caller
        raise ValueError("cursor: not a cursor returned by this API") from exc


class MatchStore:
    """The bounded store of recent matches in Redis."""

    def __init__(self, client: Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._limit = settings.api.recent_matches
        self._data = key(settings, "api", "m", "data")
        self._all = key(settings, "api", "m", "all")

    def _topic_index(self, topic_id: str) -> str:
        return key(self._settings, "api", "m", "t", topic_id)

    def _count_key(self, bucket: int) -> str:
        return key(self._settings, "api", "m", "cnt", str(bucket))

    def add(self, matches: Iterable[Match]) -> list[bool]:
        """Store matches (vector dropped); True per match that was new. Trims to the configured size."""
        items = [(match_key(m), m) for m in matches]
        if not items:
            return []
        pipe = self._client.pipeline(transaction=False)
        for mk, m in items:
            pipe.hsetnx(self._data, mk, m.model_copy(update={"vector": None}).to_json())
        fresh = [bool(r) for r in pipe.execute()]
        pipe = self._client.pipeline(transaction=False)
        for (mk, m), new in zip(items, fresh, strict=True):
            if not new:
                continue
            s = _score(m)
            pipe.zadd(self._all, {mk: s})
            pipe.zadd(self._topic_index(m.topic_id), {mk: s})
            bucket = int(m.classified_at.timestamp()) // BUCKET_S * BUCKET_S
            pipe.hincrby(self._count_key(bucket), m.topic_id, 1)
            pipe.expire(self._count_key(bucket), COUNT_TTL_S)
        pipe.execute()
        self._trim()
        return fresh

    def _trim(self) -> None:
        excess = int(self._client.zcard(self._all)) - self._limit
        if excess <= 0:
            return
        members: Any = self._client.zrange(self._all, 0, excess - 1)
        old = [m.decode() for m in members]
        pipe = self._client.pipeline(transaction=False)
        for mk in old:
            pipe.zrem(self._topic_index(mk.split(":", 1)[0]), mk)
        pipe.zrem(self._all, *old)
        pipe.hdel(self._data, *old)
        pipe.execute()

    def get(self, topic_id: str, article_id: str) -> Match | None:
        """One stored match, or None."""
        raw = self._client.hget(self._data, f"{topic_id}:{article_id}")
        return None if raw is None else decode(Match, raw)

    def page_raw(self, *, topic: str | None = None, since: datetime | None = None, until: datetime | None = None,
                 limit: int = 50, cursor: str | None = None) -> tuple[list[bytes], str | None]:
        """Newest first, filtered by topic and time: the stored JSON of each match and the next cursor.

        The listing route sends these bytes as they are (no decode and re-encode per request).

        Raises:
            ValueError: for a malformed cursor (message names the field).
        """
        index = self._topic_index(topic) if topic else self._all
        hi: float | str = "+inf" if until is None else float(int(until.timestamp() * 1000) * 1000 + 999)
        lo: float | str = "-inf" if since is None else float(int(since.timestamp() * 1000) * 1000)
        after: tuple[float, str] | None = None
        if cursor:
            after = decode_cursor(cursor)
            hi = min(float(hi), after[0])
        rows: Any = self._client.zrevrangebyscore(index, hi, lo, start=0, num=limit + 1 + (8 if after else 0),
                                                  withscores=True)
        picked: list[tuple[str, float]] = []
        for member, score in rows:
            mk = member.decode()
            if after is not None and score == after[0] and mk >= after[1]:
                continue
            picked.append((mk, float(score)))
        more = len(picked) > limit
        picked = picked[:limit]
        raws: Any = self._client.hmget(self._data, [mk for mk, _ in picked]) if picked else []
        next_cursor = encode_cursor(picked[-1][1], picked[-1][0]) if more and picked else None
        return [raw for raw in raws if raw is not None], next_cursor

    def page(self, *, topic: str | None = None, since: datetime | None = None, until: datetime | None = None,
             limit: int = 50, cursor: str | None = None) -> tuple[list[Match], str | None]:
        """As :meth:`page_raw`, decoded into records (unreadable entries skipped)."""
        raws, next_cursor = self.page_raw(topic=topic, since=since, until=until, limit=limit, cursor=cursor)
        out = []
        for raw in raws:
            try:
                out.append(decode(Match, raw))
            except RecordError:
                continue
        return out, next_cursor

    def after(self, event_id: str, topics: frozenset[str], limit: int = 500) -> list[Event]:
        """Stored matches newer than the one with ``event_id`` (a stream's Last-Event-ID), oldest first.

        Empty when that match is no longer stored (the client then only gets live events).
        """
        score = self._client.zscore(self._all, event_id)
        if score is None:
            return []
        rows: Any = self._client.zrangebyscore(self._all, f"({float(score)}", "+inf", start=0, num=limit)
        keys = [r.decode() for r in rows]
        keys = [k for k in keys if not topics or k.split(":", 1)[0] in topics]
        raws: Any = self._client.hmget(self._data, keys) if keys else []
        return [Event(k, k.split(":", 1)[0], raw) for k, raw in zip(keys, raws, strict=True) if raw is not None]

    def counts(self, since_s: float, until_s: float) -> dict[str, list[tuple[int, int]]]:
        """Matches per topic per 5-minute bucket in ``[since_s, until_s]``: ``{topic: [(bucket_start, n)]}``."""
        first = int(since_s) // BUCKET_S * BUCKET_S
        buckets = list(range(first, int(until_s) + 1, BUCKET_S))
        pipe = self._client.pipeline(transaction=False)
        for b in buckets:
            pipe.hgetall(self._count_key(b))
        out: dict[str, list[tuple[int, int]]] = {}
        for b, row in zip(buckets, pipe.execute(), strict=True):
            for topic, n in row.items():
                out.setdefault(topic.decode(), []).append((b, int(n)))
        return out


@dataclass(frozen=True)
class Event:
    """One match as stream clients get it: its event id, topic, and the JSON sent as ``data``."""

    id: str
    topic_id: str
    data: bytes

    @classmethod
    def of(cls, m: Match) -> Event:
        """Serialize once per match, not once per client."""
        return cls(match_key(m), m.topic_id, m.model_copy(update={"vector": None}).to_json())


class TooManyStreams(RuntimeError):
    """A key already holds as many streams as it may."""


@dataclass(eq=False)
class _Client:
    topics: frozenset[str]
    queue: asyncio.Queue[Event]
    loop: asyncio.AbstractEventLoop
    owner: str
    dropped: int = 0


@dataclass
class Hub:
    """Fans matches out to stream clients. ``publish`` is thread-safe; each client has a bounded queue."""

    queue_size: int = 1000
    per_owner: int = 1_000_000
    _clients: set[_Client] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, topics: Iterable[str], owner: str = "") -> _Client:
        """Register a client for ``topics`` (empty: every topic) on the running event loop.

        Raises:
            TooManyStreams: when ``owner`` already holds ``per_owner`` streams.
        """
        c = _Client(frozenset(topics), asyncio.Queue(self.queue_size), asyncio.get_running_loop(), owner)
        with self._lock:
            if sum(1 for x in self._clients if x.owner == owner) >= self.per_owner:
                raise TooManyStreams(f"key {owner} already holds {self.per_owner} streams")
            self._clients.add(c)
        metrics.API_STREAM_CLIENTS.set(len(self._clients))
        return c

    def unsubscribe(self, c: _Client) -> None:
        """Forget a client."""
        with self._lock:
            self._clients.discard(c)
        metrics.API_STREAM_CLIENTS.set(len(self._clients))

    def count(self) -> int:
        """Connected clients."""
        return len(self._clients)

    def publish(self, matches: list[Match]) -> None:
        """Hand each match to the clients following its topic; a full client queue drops (and counts) it."""
        with self._lock:
            clients = list(self._clients)
        if not clients:
            return
        events = [Event.of(m) for m in matches]
        for c in clients:
            wanted = [e for e in events if not c.topics or e.topic_id in c.topics]
            if wanted:
                try:
                    c.loop.call_soon_threadsafe(_offer, c, wanted)
                except RuntimeError:  # the client's loop is closed: it is going away
                    self.unsubscribe(c)


def _offer(c: _Client, events: list[Event]) -> None:
    for e in events:
        try:
            c.queue.put_nowait(e)
        except asyncio.QueueFull:
            c.dropped += 1
            metrics.API_STREAM_DROPPED.inc()


class MatchFollower:
    """The background reader of the matches topic that feeds a :class:`MatchStore` and a :class:`Hub`."""

    def __init__(self, settings: Settings, store: MatchStore, hub: Hub, client: Redis) -> None:
        self._settings = settings
        self._store = store
        self._hub = hub
        self._client = client
        self._topic = settings.kafka.topics.matches
        self._offsets = key(settings, "api", "m", "offsets")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-matches", daemon=True)
        self._consumer: KafkaConsumer | None = None
        self.assigned = threading.Event()

    def start(self) -> MatchFollower:
        """Start following in a daemon thread."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout_s)

    def connected(self) -> bool:
        """True while the reader has its partitions and the broker answers."""
        c = self._consumer
        return c is not None and self.assigned.is_set() and bool(c.bootstrap_connected())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # noqa: BLE001 - the reader must outlive broker and Redis outages
                log.warning("api_matches_reader_failed", error=describe_error(exc))
                self.assigned.clear()
                self._stop.wait(2.0)

    def _follow(self) -> None:
        consumer = KafkaConsumer(**client_config(self._settings), group_id=None, enable_auto_commit=False,
                                 client_id=f"{self._settings.kafka.client_id}-api", consumer_timeout_ms=1000)
        self._consumer = consumer
        try:
            parts = None
            while not parts and not self._stop.is_set():
                parts = consumer.partitions_for_topic(self._topic)
                if not parts:
                    self._stop.wait(1.0)
            if not parts:
                return
            tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            saved = {int(k): int(v) for k, v in self._client.hgetall(self._offsets).items()}
            ends = consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, min(saved.get(tp.partition, ends[tp]), ends[tp]))
            self.assigned.set()
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=500, max_records=500)
                if batch:
                    self._handle([r for recs in batch.values() for r in recs])
        finally:
            self._consumer = None
            consumer.close()

    def _handle(self, records: list[Any]) -> None:
        good: list[Match] = []
        offsets: dict[int, int] = {}
        for r in records:
            offsets[r.partition] = max(offsets.get(r.partition, 0), r.offset + 1)
            try:
                good.append(decode(Match, r.value))
            except RecordError as exc:
                metrics.API_MATCHES_STORED.labels("bad").inc()
                log.warning("api_match_unreadable", partition=r.partition, offset=r.offset, error=str(exc))
        # Live clients first (the store's round trips would only delay them). Every process publishes what it
        # reads, whether or not another replica stored it first.
        self._hub.publish(good)
        fresh = self._store.add(good)
        for new in fresh:
            metrics.API_MATCHES_STORED.labels("new" if new else "seen").inc()
        if offsets:
            self._client.hset(self._offsets, mapping={str(p): o for p, o in offsets.items()})


def now_s() -> float:
    """The wall clock, for callers that bucket counts."""
    return time.time()
