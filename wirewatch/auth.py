"""API keys: hashed storage, scopes, per-key rate limits and caps, as FastAPI dependencies.

A key's secret is ``ww_<key id>_<random>``, shown once at creation. Redis keeps only its SHA-256 (the secret
has 256 bits of entropy, so a plain hash is enough) in the hash ``<prefix>api:keys`` (key id -> JSON), so a
lookup is one ``HGET`` by the id embedded in the secret followed by a constant-time comparison.

Scopes: ``admin`` sees and changes everything; ``subscriber`` sees shared definitions (topics, feeds, matches)
and sees and changes only the records it owns (``owner`` == its key id). Routes use:

* ``Depends(current_key)``: any valid key (401 without or with a wrong key; 429 with ``Retry-After`` past
  the per-key rate limit);
* ``Depends(require_scope("admin"))`` (or the ``AdminKey`` annotation): additionally 403 for other scopes;
* :func:`ensure_owner` (404 for a record a subscriber does not own, so ids do not leak) and
  :func:`visible` (filter a listing);
* :func:`check_cap` before creating a topic, subscription or feed (403 naming the cap).

The dashboard sends the key as the ``ww_key`` cookie (HttpOnly, SameSite=Strict); a cookie-authenticated
request that changes data must also carry ``X-Wirewatch-CSRF: 1``, which a cross-site form cannot send.

The request-scoped :class:`ApiContext` (settings, Redis client, key store) is reached with
``Depends(get_context)``; routers never build their own Redis connections.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from redis import Redis

from wirewatch.records import utcnow
from wirewatch.settings import Settings
from wirewatch.state import RateLimiter, key

Scope = Literal["admin", "subscriber"]
CapKind = Literal["topics", "subscriptions", "feeds"]
SECRET_PREFIX = "ww_"


class Caps(BaseModel):
    """How many records of each kind a key may own; None means no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topics: int | None = Field(default=20, ge=0)
    subscriptions: int | None = Field(default=50, ge=0)
    feeds: int | None = Field(default=100, ge=0)


ADMIN_CAPS = Caps(topics=None, subscriptions=None, feeds=None)


class ApiKey(BaseModel):
    """A key as routes see it: never the secret, never its hash."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str
    scope: Scope
    created_at: datetime
    caps: Caps = Caps()
    rate_limit_per_minute: int | None = Field(default=None, ge=1)

    @property
    def is_admin(self) -> bool:
        """True for the admin scope."""
        return self.scope == "admin"


def hash_secret(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_secret(secret: str) -> str | None:
    """The key id embedded in a well-formed secret, else None."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    parts = secret.split("_", 2)
    if len(parts) != 3 or not parts[1].isalnum() or len(parts[1]) > 32 or len(parts[2]) < 16:
        return None
    return parts[1]


class KeyStore:
    """API keys in Redis, by id, with only the secret's hash stored."""

    def __init__(self, client: Redis, settings: Settings) -> None:
        self._client = client
        self._hash = key(settings, "api", "keys")

    def create(self, name: str, scope: Scope, caps: Caps | None = None,
               rate_limit_per_minute: int | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns it and its secret (which is not stored and cannot be shown again)."""
        kid = secrets.token_hex(6)
        secret = f"{SECRET_PREFIX}{kid}_{secrets.token_urlsafe(32)}"
        api_key = ApiKey(id=kid, name=name, scope=scope, created_at=utcnow(),
                         caps=caps or (ADMIN_CAPS if scope == "admin" else Caps()),
                         rate_limit_per_minute=rate_limit_per_minute)
        doc = api_key.model_dump(mode="json") | {"hash": hash_secret(secret)}
        if not self._client.hsetnx(self._hash, kid, json.dumps(doc)):
            return self.create(name, scope, caps, rate_limit_per_minute)  # id collision: 1 in 2^48
        return api_key, secret

    def verify(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, or None (unknown id, revoked, or wrong secret)."""
        kid = parse_secret(secret)
        if kid is None:
            return None
        raw = self._client.hget(self._hash, kid)
        if raw is None:
            return None
        doc = json.loads(raw)
        if not hmac.compare_digest(str(doc.get("hash", "")), hash_secret(secret)):
            return None
        return ApiKey.model_validate(doc)

    def get(self, kid: str) -> ApiKey | None:
        """The key with this id, or None."""
        raw = self._client.hget(self._hash, kid)
        return None if raw is None else ApiKey.model_validate_json(raw)

    def all(self) -> list[ApiKey]:
        """Every key, oldest first."""
        keys = [ApiKey.model_validate_json(raw) for raw in self._client.hvals(self._hash)]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    def revoke(self, kid: str) -> bool:
        """Delete the key; True when it existed. Requests with it fail from the next one on."""
        return bool(self._client.hdel(self._hash, kid))


@dataclass
class ApiContext:
    """What every route may use: the settings, one shared Redis client, the key store and the limiter."""

    settings: Settings
    redis: Redis
    keys: KeyStore
    limiter: RateLimiter
    extras: dict[str, Any]

    @classmethod
    def build(cls, settings: Settings, client: Redis) -> ApiContext:
        """A context on ``client``."""
        return cls(settings, client, KeyStore(client, settings), RateLimiter(client), {})


def get_context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext` (set by :func:`wirewatch.api.create_app`)."""
    ctx: ApiContext = request.app.state.ww
    return ctx


COOKIE = "ww_key"
CSRF_HEADER = "x-wirewatch-csrf"


def _presented_secret(request: Request) -> tuple[str | None, bool]:
    """The secret sent with the request and whether it came from the dashboard's cookie."""
    header = request.headers.get("x-api-key")
    if header:
        return header.strip(), False
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="wirewatch", charset="UTF-8"'}


def current_key(request: Request, ctx: Annotated[ApiContext, Depends(get_context)]) -> ApiKey:
    """The caller's key. 401 without a key or with a wrong one; 429 past the key's rate limit."""
    secret, from_cookie = _presented_secret(request)
    if not secret:
        raise HTTPException(401, "missing API key: send it in the X-API-Key header", headers=_UNAUTHORIZED)
    if from_cookie and request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
        # A cross-site form can carry the cookie but not a custom header.
        raise HTTPException(403, f"dashboard requests that change data need the {CSRF_HEADER} header")
    api_key = ctx.keys.verify(secret)
    if api_key is None:
        refuse_guessing(request, ctx)
        raise HTTPException(401, "invalid API key", headers=_UNAUTHORIZED)
    per_minute = api_key.rate_limit_per_minute or ctx.settings.api.rate_limit_per_minute
    ok, wait_s = ctx.limiter.allow(key(ctx.settings, "api", "rl", api_key.id), per_minute, 60.0)
    if not ok:
        raise HTTPException(429, f"rate limit of {per_minute} requests per minute reached for key "
                                 f"{api_key.id}", headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
    request.state.api_key = api_key
    return api_key


def refuse_guessing(request: Request, ctx: ApiContext) -> None:
    """429 once a client address has presented too many wrong keys in a minute (slows key guessing)."""
    addr = request.client.host if request.client else "unknown"
    limit = ctx.settings.api.auth_failures_per_minute
    ok, wait_s = ctx.limiter.allow(key(ctx.settings, "api", "authfail", addr), limit, 60.0)
    if not ok:
        raise HTTPException(429, f"too many invalid API keys from this address (limit {limit} per minute)",
                            headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require_scope(scope: Scope) -> Callable[[ApiKey], ApiKey]:
    """A dependency, ``Depends(require_scope("admin"))``, giving the caller's key when it has ``scope``.

    Admin has every scope. 401/429 as :func:`current_key`; 403 for a key without the scope.
    """

    def dependency(api_key: CurrentKey) -> ApiKey:
        if api_key.scope != scope and not api_key.is_admin:
            raise HTTPException(
                403, f"this route needs the {scope} scope; key {api_key.id} has {api_key.scope}")
        return api_key

    return dependency


AdminKey = Annotated[ApiKey, Depends(require_scope("admin"))]


def can_see(api_key: ApiKey, owner: str | None) -> bool:
    """True when ``api_key`` may see and change a record owned by ``owner``."""
    return api_key.is_admin or (owner is not None and owner == api_key.id)


def ensure_owner(api_key: ApiKey, record: Any, what: str = "record") -> None:
    """404 (not 403, so ids do not leak) when ``record`` is missing or owned by someone else."""
    if record is None or not can_see(api_key, getattr(record, "owner", None)):
        raise HTTPException(404, f"{what} not found")


def visible(api_key: ApiKey, records: list[Any]) -> list[Any]:
    """The records ``api_key`` may see (all for admin, its own for a subscriber)."""
    return [r for r in records if can_see(api_key, getattr(r, "owner", None))]


def owned_count(api_key: ApiKey, records: list[Any]) -> int:
    """How many of ``records`` ``api_key`` owns (what caps count)."""
    return sum(1 for r in records if getattr(r, "owner", None) == api_key.id)


def check_cap(api_key: ApiKey, kind: CapKind, current_count: int) -> None:
    """403 when one more ``kind`` record would exceed the key's cap; ``current_count``: how many it owns."""
    cap = getattr(api_key.caps, kind)
    if cap is not None and current_count >= cap:
        raise HTTPException(403, f"cap reached: key {api_key.id} may own at most {cap} {kind}")
