"""Per-feed polling state in Redis, so a restarted worker continues where the last one stopped.

All feeds' states live in one hash ``<prefix>ingest:feeds`` (feed id -> JSON): a worker loads every state
with one ``HGETALL`` at start and writes one field per fetch. A state is written only after the fetch's
entries were acknowledged by Kafka, so a crash leaves the previous state and the feed is fetched again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import redis

from wirewatch.records import Feed
from wirewatch.settings import Settings
from wirewatch.state import key


@dataclass(frozen=True)
class FeedState:
    """What the worker remembers about one feed. Times are UNIX seconds; 0 means never."""

    feed_id: str
    url: str
    """Where the feed is fetched now (a permanent redirect moves it)."""
    identity_url: str = ""
    """The URL the feed was first registered with; entry identities fall back to it, so a move keeps them."""
    etag: str | None = None
    last_modified: str | None = None
    errors: int = 0
    """Consecutive failed fetches."""
    last_outcome: str = ""
    last_error: str = ""
    last_error_at: float = 0.0
    last_success_at: float = 0.0
    last_attempt_at: float = 0.0
    last_new_at: float = 0.0
    next_due: float = 0.0
    interval_s: float = 0.0
    rate_per_h: float | None = None
    """Observed publishing rate, new entries per hour (None until known)."""
    entries: int = 0
    """Entries in the last successful parse."""
    items_new: int = 0
    items_updated: int = 0
    fetches: int = 0
    body_hash: str = ""
    """Digest of the last body read in full; an identical body is not parsed again (servers without ETags)."""
    read_at: float = 0.0
    """When a body was last read in full (parsed, entries checked, seen marks refreshed)."""
    problem: str = ""
    """The last parse problem (bozo type) of a feed that still had entries."""
    disabled_reason: str = ""

    def to_json(self) -> str:
        """Serialize."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> FeedState:
        """Parse; unknown fields (from a newer writer) are ignored."""
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> FeedState:
        """A copy with ``changes``."""
        return replace(self, **changes)


def state_for(feed: Feed, known: FeedState | None) -> FeedState:
    """The state to poll ``feed`` with: ``known`` (or a fresh one), at the URL the registry gives now."""
    st = known
    if st is None:
        st = FeedState(feed_id=feed.id, url=feed.url, identity_url=feed.url)
    elif st.url != feed.url and not st.identity_url:
        st = st.with_(identity_url=st.url)
    if st.url != feed.url:
        # The registry says the feed lives elsewhere now (an edit, or our own move): fresh validators.
        st = st.with_(url=feed.url, etag=None, last_modified=None)
    return st


class StateStore:
    """Feed states in one Redis hash."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._hash = key(settings, "ingest", "feeds")

    def load_all(self) -> dict[str, FeedState]:
        """Every stored state by feed id; unreadable entries are skipped (the feed starts afresh)."""
        out: dict[str, FeedState] = {}
        for fid, raw in self._client.hgetall(self._hash).items():
            try:
                st = FeedState.from_json(raw)
            except (ValueError, TypeError):
                continue
            out[fid.decode() if isinstance(fid, bytes) else fid] = st
        return out

    def get(self, feed_id: str) -> FeedState | None:
        """One feed's state, or None."""
        raw = self._client.hget(self._hash, feed_id)
        if raw is None:
            return None
        try:
            return FeedState.from_json(raw)
        except (ValueError, TypeError):
            return None

    def save(self, state: FeedState) -> None:
        """Write one state."""
        self._client.hset(self._hash, state.feed_id, state.to_json())

    def save_many(self, states: Iterable[FeedState]) -> None:
        """Write several states in one round trip."""
        mapping = {s.feed_id: s.to_json() for s in states}
        if mapping:
            self._client.hset(self._hash, mapping=mapping)  # type: ignore[arg-type]

    def delete(self, feed_id: str) -> None:
        """Forget a feed's state (it was removed)."""
        self._client.hdel(self._hash, feed_id)
