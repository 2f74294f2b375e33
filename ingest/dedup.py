"""Never repeat an article: one Redis key per article id holding the digest of what was last published.

A fetch goes through three steps, one round trip each:

1. :meth:`SeenStore.claim` looks at every entry of the fetch at once (a Lua script) and tells each one's fate:
   ``new`` (never published), ``updated`` (published with another title/summary digest), ``seen`` (published
   as it is; its TTL is refreshed so an entry that stays in a feed never expires) or ``busy`` (another worker
   holds an unacknowledged claim on it right now). New and updated entries are claimed for ``claim_lease_s``.
2. The caller produces the claimed entries and waits for Kafka's acknowledgement.
3. :meth:`SeenStore.commit` records their digests. On a produce failure :meth:`SeenStore.release` restores the
   prior value. A crash between 1 and 3 leaves only a claim that lapses after the lease, and since the feed
   state is not advanced the feed is fetched again: nothing is lost, and the lease keeps two workers from
   producing the same entry at once.

Memory is bounded by ``seen_ttl_s``: each key expires that long after its entry was last served.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from enum import StrEnum

import redis

from wirewatch.settings import Settings
from wirewatch.state import key

CLAIM_CHUNK = 500


class Fate(StrEnum):
    """What to do with one fetched entry."""

    NEW = "new"
    UPDATED = "updated"
    SEEN = "seen"
    BUSY = "busy"


_CLAIM = """
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local owner = ARGV[4]
local out = {}
for i, k in ipairs(KEYS) do
  local h = ARGV[4 + i]
  local v = redis.call('GET', k)
  local old = v
  local fate = nil
  if v and string.sub(v, 1, 2) == 'p|' then
    local o, exp, prev = string.match(v, '^p|([^|]*)|(%d+)|(.*)$')
    if o and o ~= owner and tonumber(exp) > now then
      fate = 'busy'
    else
      old = prev
      if old == nil or old == '' then old = false end
    end
  end
  if not fate then
    if not old then fate = 'new' elseif old == h then fate = 'seen' else fate = 'updated' end
    if fate == 'seen' then
      if v ~= old then redis.call('SET', k, old, 'EX', ttl) else redis.call('EXPIRE', k, ttl) end
    else
      redis.call('SET', k, 'p|' .. owner .. '|' .. (now + lease) .. '|' .. (old or ''), 'EX', ttl)
    end
  end
  out[i] = fate
end
return out
"""

_RELEASE = """
local mine = 'p|' .. ARGV[1] .. '|'
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and string.sub(v, 1, string.len(mine)) == mine then
    local prev = string.match(v, '^p|[^|]*|%d+|(.*)$')
    if prev == nil or prev == '' then redis.call('DEL', k) else redis.call('SET', k, prev, 'EX', ARGV[2]) end
  end
end
return 1
"""


def new_owner() -> str:
    """A claim owner id unique to this process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".replace("|", "_")


class SeenStore:
    """The seen-entries store for one worker process. See the module docstring."""

    def __init__(self, client: redis.Redis, settings: Settings, owner: str | None = None) -> None:
        self._client = client
        self._settings = settings
        self._ttl = settings.ingest.seen_ttl_s
        self._lease_ms = int(settings.ingest.claim_lease_s * 1000)
        self.owner = owner or new_owner()
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def key(self, article_id: str) -> str:
        """The Redis key of one article id."""
        return key(self._settings, "ingest", "seen", article_id)

    def claim(self, items: Sequence[tuple[str, str]]) -> list[Fate]:
        """Decide the fate of each ``(article_id, digest)``; claims the new and updated ones."""
        out: list[Fate] = []
        now_ms = int(time.time() * 1000)
        # Chunks keep each script short: Redis runs nothing else while a script runs.
        for start in range(0, len(items), CLAIM_CHUNK):
            chunk = items[start:start + CLAIM_CHUNK]
            raw = self._claim(keys=[self.key(a) for a, _ in chunk],
                              args=[now_ms, self._lease_ms, self._ttl, self.owner, *(d for _, d in chunk)])
            out.extend(Fate(r.decode() if isinstance(r, bytes) else r) for r in raw)
        return out

    def commit(self, items: Sequence[tuple[str, str]]) -> None:
        """Record ``(article_id, digest)`` as published (after Kafka acknowledged them)."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for aid, digest in items:
            pipe.set(self.key(aid), digest, ex=self._ttl)
        pipe.execute()

    def release(self, article_ids: Sequence[str]) -> None:
        """Undo this owner's claims on ``article_ids`` (their produce failed), restoring the prior digest."""
        if article_ids:
            self._release(keys=[self.key(a) for a in article_ids], args=[self.owner, self._ttl])

    def digest(self, article_id: str) -> str | None:
        """The published digest of an article id (None when never published or only claimed)."""
        raw = self._client.get(self.key(article_id))
        if raw is None:
            return None
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        return None if value.startswith("p|") else value
