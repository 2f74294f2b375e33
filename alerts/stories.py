"""Story folding: near-duplicate matches on a topic become one story within a time window.

A match folds into the existing story whose closest member article is at least ``story_similarity``
similar (:func:`alerts.fingerprint.similarity`: classifier vector cosine or text resemblance, lowered when
the texts name different places or people); otherwise it starts a new story. A story keeps its articles
and sources. Folding is idempotent: an article already folded (a replay after a crash) gets its story
back unchanged, so everything downstream computes the same keys again.

Redis layout, per topic (every key under the configured prefix, expiring after the window):
``st:<topic>:idx`` a stream of member fingerprints (what other processes added since we last looked),
``st:<topic>:s:<story>`` the story JSON, ``st:<topic>:a:<article>`` the article's story,
``st:<topic>:list`` story ids by last update, ``st:<topic>:lock`` held while folding a batch.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from alerts.fingerprint import Print
from alerts.storyindex import Member, TopicIndex
from wirewatch import metrics
from wirewatch.records import Match
from wirewatch.settings import Settings
from wirewatch.state import key

MAX_ARTICLES = 200
CACHED_STORIES = 20_000
MILESTONES = (3, 5, 10, 20, 50)
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True)
class Story:
    """A cluster of articles on one topic about one event."""

    id: str
    topic_id: str
    title: str
    url: str | None
    summary: str
    first_article_id: str
    article_ids: tuple[str, ...]
    sources: tuple[str, ...]
    article_count: int
    created_at: datetime
    updated_at: datetime
    articles: tuple[dict[str, str | None], ...] = ()
    """Per article (capped like ``article_ids``): id, title, url, source, published_at."""

    def to_json(self) -> str:
        """Serialize."""
        d = self.__dict__ | {"created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}
        return json.dumps(d, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Story:
        """Parse what :meth:`to_json` wrote."""
        d = json.loads(raw)
        d["article_ids"], d["sources"] = tuple(d["article_ids"]), tuple(d["sources"])
        d["articles"] = tuple(d.get("articles", ()))
        d["created_at"], d["updated_at"] = (datetime.fromisoformat(d[k]) for k in ("created_at", "updated_at"))
        return cls(**d)


@dataclass(frozen=True)
class Folded:
    """A match and the story it belongs to after folding."""

    match: Match
    story: Story
    new_story: bool
    replay: bool = False
    """The article was folded before (a re-delivered message): nothing changed."""
    similarity: float = 1.0
    material: bool = False
    """It joined a known story and states numbers or names the story had not mentioned."""
    milestone: int | None = None
    """The story's source count just reached this milestone."""


def story_id(topic_id: str, article_id: str) -> str:
    """The id of a story started by ``article_id``."""
    return hashlib.sha1(f"{topic_id}\x1f{article_id}".encode()).hexdigest()[:16]


def _ref(m: Match) -> dict[str, str | None]:
    a = m.article
    return {"id": a.id, "title": a.title, "url": a.url, "source": a.source, "published_at": a.published_at.isoformat()}


def _text(m: Match) -> str:
    return f"{m.article.title}\n{m.article.summary[:600]}"


class StoryFolder:
    """Folds batches of matches into stories; safe to run in many processes at once (per-topic lock)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._s = settings
        self._window_ms = settings.alerts.story_window_s * 1000
        self._threshold = settings.alerts.story_similarity
        self._indexes: dict[str, TopicIndex] = defaultdict(TopicIndex)
        self._cache: OrderedDict[str, Story] = OrderedDict()  # stories as last written; see _sync
        self._unlock = client.register_script(_UNLOCK)
        self._token = uuid.uuid4().hex

    def _k(self, topic: str, *parts: str) -> str:
        return key(self._s, "st", topic, *parts)

    def fold(self, matches: list[Match]) -> list[Folded]:
        """Assign each match to a story, in order; returns one :class:`Folded` per match.

        Round trips: one to learn which articles were folded before, take the topics' locks and read
        what other processes appended, one to write the batch and release the locks (more only when a
        lock is busy, a replayed article's story must be read, or a story is not in the local cache).
        """
        if not matches:
            return []
        topics = sorted({m.topic_id for m in matches})
        lock = self._locked(topics)
        pipe = self._r.pipeline(transaction=False)
        pipe.mget([self._k(m.topic_id, "a", m.article.id) for m in matches])
        lock.queue_take(pipe)
        self._queue_sync(pipe, topics)
        replies = pipe.execute()
        known, got, entries = replies[0], replies[1:1 + len(topics)], replies[1 + len(topics):]
        self._apply_sync(topics, entries)  # read under our locks, or harmless: what was written is written
        try:
            if not lock.taken(got):
                lock.acquire()
                self._sync(topics)
            out = self._fold_locked(matches, known, lock)
        except BaseException:
            lock.release()
            raise
        for f in out:
            metrics.ALERTS_STORIES.labels("replay" if f.replay else "new" if f.new_story else "folded").inc()
        return out

    def _fold_locked(self, matches: list[Match], known: list[bytes | None], lock: _Lock) -> list[Folded]:
        """Fold with the topics' locks held; the last round trip writes the batch and releases them."""
        out: dict[int, Folded] = {}
        fresh: dict[str, list[int]] = defaultdict(list)
        for i, (m, sid) in enumerate(zip(matches, known, strict=True)):
            if sid is None:
                fresh[m.topic_id].append(i)
        replayed = [i for i, sid in enumerate(known) if sid is not None]
        if replayed:
            raws = self._r.mget([self._k(matches[i].topic_id, "s", known[i].decode()) for i in replayed])  # type: ignore[union-attr]
            for i, raw in zip(replayed, raws, strict=True):
                if raw is None:  # the story expired but the mapping did not: fold again
                    fresh[matches[i].topic_id].append(i)
                else:
                    out[i] = Folded(matches[i], Story.from_json(raw), new_story=False, replay=True)
        now_ms = int(time.time() * 1000)
        writes = []
        for topic, idxs in fresh.items():
            results, prints, stories = self._fold_topic(topic, [matches[i] for i in idxs], now_ms)
            writes.append((topic, results, prints, stories))
            for i, f in zip(idxs, results, strict=True):
                out[i] = f
        self._write(writes, now_ms, lock)  # one round trip for the whole batch, releasing the locks
        return [out[i] for i in range(len(matches))]

    # -- internals ------------------------------------------------------------------------------------
    def _locked(self, topics: list[str]) -> _Lock:
        return _Lock(self._r, [self._k(t, "lock") for t in topics], self._token, self._unlock)

    def _queue_sync(self, pipe: Any, topics: list[str]) -> None:
        for t in topics:
            pipe.xrange(self._k(t, "idx"), min=f"({self._indexes[t].last_id}", max="+")

    def _sync(self, topics: list[str]) -> None:
        """Read what any process appended to these topics' indexes since we last looked."""
        pipe = self._r.pipeline(transaction=False)
        self._queue_sync(pipe, topics)
        self._apply_sync(topics, pipe.execute())

    def _apply_sync(self, topics: list[str], replies: list[Any]) -> None:
        """Add other processes' members; the stories they changed leave the local cache (read again when used)."""
        horizon = int(time.time() * 1000) - self._window_ms
        for t, entries in zip(topics, replies, strict=True):
            idx = self._indexes[t]
            for entry_id, fields in entries:
                idx.last_id = entry_id.decode()
                member = _decode_member(fields)
                idx.add(member)
                self._cache.pop(member.story, None)
            idx.prune(horizon)

    def _fold_topic(self, topic: str, matches: list[Match],
                    now_ms: int) -> tuple[list[Folded], list[Print], dict[str, Story]]:
        idx = self._indexes[topic]
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        stories: dict[str, Story] = {}
        results: list[Folded] = []
        prints: list[Print] = []
        for m in matches:
            fp = Print.of(_text(m))
            vec = np.asarray(m.vector, dtype=np.float32) if m.vector is not None else None
            best, best_sim = idx.best(fp, vec, self._threshold)
            story = None
            if best is not None and best_sim >= self._threshold:
                story = stories.get(best.story) or self._cache.get(best.story) or self._load(topic, best.story)
                if story is None:  # expired between sync and now: start afresh
                    best = None
            if best is not None and best_sim >= self._threshold and story is not None:
                seen = [x.fp for x in idx.members if x.story == story.id]
                before = len(story.sources)
                story = _add(story, m, now)
                material = _is_material(fp, m.article.title, seen)
                milestone = len(story.sources) if len(story.sources) > before and len(story.sources) in MILESTONES \
                    else None
                results.append(Folded(m, story, False, False, best_sim, material, milestone))
            else:
                story = Story(id=story_id(topic, m.article.id), topic_id=topic, title=m.article.title,
                              url=m.article.url,
                              summary=m.article.summary[:1000], first_article_id=m.article.id,
                              article_ids=(m.article.id,), sources=(m.article.source,) if m.article.source else (),
                              article_count=1, created_at=now, updated_at=now, articles=(_ref(m),))
                results.append(Folded(m, story, True, similarity=max(best_sim, 0.0)))
            stories[story.id] = story
            prints.append(fp)
            idx.add(Member(story.id, vec, fp, now_ms))
        return results, prints, stories

    def _evict(self, now_ms: int) -> None:
        """Drop cached stories nothing can fold into any more, then the least recently written over the cap.

        The cache is in write order, and a story is written whenever an article folds into it; one last
        written before the window began has no member left in any index, so it only held memory.
        """
        horizon = datetime.fromtimestamp((now_ms - self._window_ms) / 1000, UTC)
        while self._cache and next(iter(self._cache.values())).updated_at < horizon:
            self._cache.popitem(last=False)
        while len(self._cache) > CACHED_STORIES:
            self._cache.popitem(last=False)

    @property
    def cached(self) -> int:
        """How many stories the local cache holds (bounded by what the window holds, at most CACHED_STORIES)."""
        return len(self._cache)

    def _load(self, topic: str, sid: str) -> Story | None:
        raw = self._r.get(self._k(topic, "s", sid))
        return Story.from_json(raw) if raw is not None else None

    def _write(self, writes: list[tuple[str, list[Folded], list[Print], dict[str, Story]]], now_ms: int,
               lock: _Lock) -> None:
        ttl_ms = self._window_ms + 3600_000
        pipe = self._r.pipeline(transaction=False)
        last_add: dict[str, int] = {}
        for topic, results, prints, stories in writes:
            last_add[topic] = self._queue_topic(pipe, topic, results, prints, stories, now_ms, ttl_ms)
        lock.queue_release(pipe)
        replies = pipe.execute()
        for _, _, _, stories in writes:
            for s in stories.values():
                self._cache[s.id] = s
                self._cache.move_to_end(s.id)
        self._evict(now_ms)
        for topic, pos in last_add.items():
            # we hold the topic's lock, so our last entry is the stream's last: nothing to read back next time
            reply = replies[pos]
            self._indexes[topic].last_id = reply.decode() if isinstance(reply, bytes) else str(reply)

    def _queue_topic(self, pipe: Any, topic: str, results: list[Folded], prints: list[Print],
                     stories: dict[str, Story], now_ms: int, ttl_ms: int) -> int:
        """Queue one topic's writes; returns the position of its last XADD in the pipeline."""
        last = -1
        for f, fp in zip(results, prints, strict=True):
            fields: dict[str, bytes | str] = {
                "s": f.story.id, "t": str(now_ms), "mh": fp.signature.tobytes(),
                "n": " ".join(sorted(fp.names)), "w": " ".join(sorted(fp.vocab))[:4000],
                "d": " ".join(sorted(fp.numbers)),
            }
            if f.match.vector is not None:
                fields["v"] = np.asarray(f.match.vector, dtype=np.float32).tobytes()
            last = len(pipe)
            pipe.xadd(self._k(topic, "idx"), fields)
            pipe.set(self._k(topic, "a", f.match.article.id), f.story.id, px=ttl_ms)
        for s in stories.values():
            pipe.set(self._k(topic, "s", s.id), s.to_json(), px=ttl_ms)
            pipe.set(key(self._s, "st", "topic-of", s.id), topic, px=ttl_ms)
            pipe.zadd(self._k(topic, "list"), {s.id: now_ms})
        pipe.xtrim(self._k(topic, "idx"), minid=str(now_ms - self._window_ms), approximate=True)
        pipe.zremrangebyscore(self._k(topic, "list"), 0, now_ms - self._window_ms)
        pipe.pexpire(self._k(topic, "idx"), ttl_ms)
        pipe.pexpire(self._k(topic, "list"), ttl_ms)
        return last

    def list(self, topic: str, limit: int = 50) -> list[Story]:
        """The topic's stories, most recently updated first."""
        ids = self._r.zrevrange(self._k(topic, "list"), 0, limit - 1)
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        raws = self._r.mget([self._k(topic, "s", i) for i in names]) if names else []
        return [Story.from_json(r) for r in raws if r is not None]

    def get(self, topic: str, sid: str) -> Story | None:
        """One story, or None when unknown or expired."""
        return self._load(topic, sid)

    def find(self, sid: str) -> Story | None:
        """A story by id alone (its topic looked up), or None."""
        topic = self._r.get(key(self._s, "st", "topic-of", sid))
        if topic is None:
            return None
        return self._load(topic.decode() if isinstance(topic, bytes) else str(topic), sid)


def _add(story: Story, m: Match, now: datetime) -> Story:
    if m.article.id in story.article_ids:
        return story
    src = m.article.source
    sources = story.sources + ((src,) if src and src not in story.sources else ())
    return replace(story, article_ids=(story.article_ids + (m.article.id,))[-MAX_ARTICLES:], sources=sources,
                   article_count=story.article_count + 1, updated_at=now,
                   articles=(story.articles + (_ref(m),))[-MAX_ARTICLES:])


def _is_material(fp: Print, title: str, seen: list[Print]) -> bool:
    """A development: the new headline states a number, or two names, that no earlier article of the story had.

    (A death toll that rises, a second city; one new name is usually just a retitle: "Syria: ...".)
    """
    head = Print.of(title)
    head_names = fp.names & head.vocab  # names the headline mentions, judged with the whole text's capitals
    known_words = frozenset().union(*(p.vocab for p in seen)) if seen else frozenset()
    known_numbers = frozenset().union(*(p.numbers for p in seen)) if seen else frozenset()
    new_names = {n for n in head_names - known_words if not any(w.startswith(n) for w in known_words)}
    return bool(head.numbers - known_numbers) or len(new_names) >= 2


def _decode_member(fields: dict[bytes, bytes]) -> Member:
    vec = np.frombuffer(fields[b"v"], dtype=np.float32) if b"v" in fields else None
    fp = Print(np.frombuffer(fields[b"mh"], dtype=np.uint32), frozenset(fields[b"n"].decode().split()),
               frozenset(fields[b"w"].decode().split()), frozenset(fields.get(b"d", b"").decode().split()))
    return Member(fields[b"s"].decode(), vec, fp, int(fields[b"t"]))


class _Lock:
    """Per-topic locks taken all at once or not at all (so two processes never deadlock).

    Taking and releasing ride on the caller's pipelines (no round trip of their own when uncontended).
    A lock expires after ``ttl_s`` so a killed holder blocks others for at most that long.
    """

    def __init__(self, client: redis.Redis, keys: list[str], token: str, unlock: Any,
                 wait_s: float = 15.0, ttl_s: float = 5.0) -> None:
        self._r, self._keys, self._token, self._unlock = client, keys, token, unlock
        self._wait, self._ttl_ms = wait_s, int(ttl_s * 1000)

    def queue_take(self, pipe: Any) -> None:
        """Try every lock as commands of ``pipe`` (one reply each; see :meth:`taken`)."""
        for k in self._keys:
            pipe.set(k, self._token, nx=True, px=self._ttl_ms)

    def taken(self, got: list[Any]) -> bool:
        """True when every lock was taken; otherwise gives back those that were (all or nothing)."""
        if all(got):
            return True
        pipe = self._r.pipeline(transaction=False)
        self._queue_release(pipe, [k for k, ok in zip(self._keys, got, strict=True) if ok])
        pipe.execute()
        return False

    def acquire(self) -> None:
        """Take every lock, waiting (with jitter) while another process holds one; TimeoutError after ``wait_s``."""
        deadline = time.monotonic() + self._wait
        while True:
            pipe = self._r.pipeline(transaction=False)
            self.queue_take(pipe)
            if self.taken(pipe.execute()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"story lock still held by another worker after {self._wait:.0f}s")
            time.sleep(random.uniform(0.002, 0.02))

    def queue_release(self, pipe: Any) -> None:
        """Release every lock (only where we still hold it) as commands of ``pipe``."""
        self._queue_release(pipe, self._keys)

    def release(self) -> None:
        """Release every lock now; best effort (they expire anyway)."""
        try:
            pipe = self._r.pipeline(transaction=False)
            self.queue_release(pipe)
            pipe.execute()
        except (redis.RedisError, OSError):
            pass

    def _queue_release(self, pipe: Any, keys: list[str]) -> None:
        for k in keys:
            self._unlock(keys=[k], args=[self._token], client=pipe)
