"""Redis access and the few atomic primitives the stages share.

Redis holds only state that several processes must agree on; every key starts with ``redis.key_prefix``
(``ww:`` by default). Batched operations are pipelined: one round trip per batch, not per item.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis

from wirewatch.settings import Settings

Client = redis.Redis


def connect(settings: Settings, *, decode_responses: bool = False) -> redis.Redis:
    """A Redis client for the configured (or local stack) URL, with bounded timeouts and retry on timeout."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=True,
        decode_responses=decode_responses,
    )


def key(settings: Settings, *parts: str) -> str:
    """A namespaced key: ``<prefix><part>:<part>...``."""
    return settings.redis.key_prefix + ":".join(parts)


def first_seen(client: redis.Redis, keys: Sequence[str], ttl_s: int, value: bytes | str = b"1") -> list[bool]:
    """Mark each key seen (``SET NX EX``) in one pipelined round trip.

    Returns, per key, True when this call set it (the first sighting) and False when it already existed.
    """
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, value, nx=True, ex=ttl_s)
    return [bool(r) for r in pipe.execute()]


def get_many(client: redis.Redis, keys: Sequence[str]) -> list[bytes | None]:
    """``MGET`` that tolerates an empty list."""
    if not keys:
        return []
    return [v if v is None or isinstance(v, bytes) else v.encode() for v in client.mget(keys)]


def set_many(client: redis.Redis, items: Sequence[tuple[str, bytes | str]], ttl_s: int | None) -> None:
    """Set several keys (with an optional TTL) in one pipelined round trip."""
    if not items:
        return
    pipe = client.pipeline(transaction=False)
    for k, v in items:
        pipe.set(k, v, ex=ttl_s)
    pipe.execute()


def _as_text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# Every time below is the server's (``TIME``), never a client's: clients' clocks disagree, and a lease
# stamped by a clock that runs behind would look expired to everyone else while its holder still sends.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Claim ``key`` for ``lease`` ms unless it is already done, or claimed by someone else whose lease is live.
# Values: "done:<...>" (final) or "claim:<owner>:<expires_ms>".
_CLAIM = _NOW + """
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 1, 5) == 'done:' then return {0, v} end
  local owner, exp = string.match(v, '^claim:(.*):(%d+)$')
  if owner and owner ~= ARGV[1] and tonumber(exp) > now then return {0, v} end
end
redis.call('SET', KEYS[1], 'claim:' .. ARGV[1] .. ':' .. (now + tonumber(ARGV[2])), 'PX', ARGV[3])
return {1, v or ''}
"""

# Delete KEYS[1] only while its value still starts with ARGV[1]: read and delete in one step, so a claim
# or lock someone else took after ours expired is never deleted by us.
_DELETE_IF_OURS = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def delete_if_ours(client: redis.Redis, key: str, prefix: str) -> bool:
    """Delete ``key`` if its value (still) starts with ``prefix``, atomically; True when deleted.

    The way to give back a lock or a claim: a two-step GET-then-DEL can delete the new holder's value
    when ours expired between the two.
    """
    return bool(client.register_script(_DELETE_IF_OURS)(keys=[key], args=[prefix]))


class Ledger:
    """Claim-then-mark idempotency records: at most one holder per key at a time, final once marked done.

    ``claim`` returns True when the caller may perform the side effect now: the key is not done and either
    unclaimed, claimed by the same owner, or claimed by someone whose lease has run out (a crashed worker).
    ``done`` marks the side effect performed; later claims return False for ``ttl_s``.
    """

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_ms = ttl_s * 1000
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_DELETE_IF_OURS)

    def claim(self, key: str, owner: str, lease_s: float) -> bool:
        """Try to take ``key`` for ``lease_s`` seconds. See the class docstring."""
        ok, _ = self._claim(keys=[key], args=self._claim_args(owner, lease_s))
        return bool(ok)

    def queue_claim(self, pipe: redis.client.Pipeline, key: str, owner: str, lease_s: float) -> None:
        """:meth:`claim` as one command of ``pipe``: replies ``[1, previous]`` when taken, else ``[0, value]``."""
        self._claim(keys=[key], args=self._claim_args(owner, lease_s), client=pipe)

    def _claim_args(self, owner: str, lease_s: float) -> list[str | int]:
        return [owner, int(lease_s * 1000), self._ttl_ms]

    def done(self, key: str, detail: str = "") -> None:
        """Record the side effect as performed."""
        self._client.set(key, f"done:{detail}", px=self._ttl_ms)

    def release(self, key: str, owner: str) -> None:
        """Give up our claim (the side effect was not performed and will be retried by whoever claims next).

        Compare-and-delete in one step: a claim someone else took after ours expired stays theirs.
        """
        self._release(keys=[key], args=[f"claim:{owner}:"])

    def is_done(self, key: str) -> bool:
        """True when ``key`` was marked done."""
        value = _as_text(self._client.get(key))
        return value is not None and value.startswith("done:")


# Sliding-window counter on the server's clock: allow when fewer than ARGV[1] members in the last ARGV[2] ms.
# A member already in the window (the same slot asked for again, e.g. a retried batch) is allowed without
# taking another.
_RATE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now - tonumber(ARGV[2]))
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return {1, 0} end
local n = redis.call('ZCARD', KEYS[1])
if n < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + tonumber(ARGV[2]) - now}
"""


class RateLimiter:
    """A sliding-window rate limit shared by all processes: ``allow`` returns (allowed, retry_after_s)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script = client.register_script(_RATE)
        self._token = uuid.uuid4().hex  # unnamed slots: unique across processes without a clock
        self._seq = 0

    def allow(self, key: str, count: int, per_s: float, slot: str | None = None) -> tuple[bool, float]:
        """Take one slot in ``key``'s window of ``count`` per ``per_s`` seconds if one is free.

        ``slot`` names what the slot is for: asking again for a slot already taken inside the window is
        allowed and takes nothing (a retried batch does not spend the limit twice).
        """
        return self.allow_many([(key, count, per_s, slot)])[0]

    def allow_many(self, asks: list[tuple[str, int, float, str | None]]) -> list[tuple[bool, float]]:
        """:meth:`allow` for several (key, count, per_s, slot) in order, in one round trip."""
        if not asks:
            return []
        pipe = self._client.pipeline(transaction=False)
        for k, count, per_s, slot in asks:
            self._seq += 1
            self._script(keys=[k], args=[count, int(per_s * 1000), slot or f"{self._token}-{self._seq}"],
                         client=pipe)
        return [(bool(ok), max(0.0, float(wait_ms) / 1000)) for ok, wait_ms in pipe.execute()]
