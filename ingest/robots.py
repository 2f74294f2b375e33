"""robots.txt, read as RFC 9309 says, once per host and TTL, through the same fetcher as everything else.

What a host's robots.txt answer means for its pages:

* 200: its rules, for our product token (the User-Agent up to the first ``/``), else for ``*``.
* 4xx (404 most often): no robots.txt, so everything is allowed (RFC 9309 2.3.1.3 "unavailable").
* 5xx, a timeout, a refused connection, an unsafe redirect: the host is "unreachable" and every page is
  disallowed until the next look (RFC 9309 2.3.1.4), so a struggling server is not read harder.

Each host's verdict is kept ``robots_ttl_s`` (RFC 9309 caps caching at 24 hours); concurrent asks for one
host share a single fetch. ``Crawl-delay`` (and ``Request-rate``, as seconds per request) in the group that
applies to us is kept with the rules and re-read with them: :meth:`RobotsCache.crawl_delay` says how far
apart this host's page fetches must start (the page cache keeps the turns: ``ingest.fulltext.PageCache.turn``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from ingest.fetcher import Conditional, FetchResult, Outcome

MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309 2.5: parse at least 500 KiB
ROBOTS_TIMEOUT_S = 5.0
NO_VALIDATORS = Conditional()
_FRACTION = re.compile(r"(\s*crawl-delay\s*:\s*)(\d{0,6}\.\d{1,6})\s*(?:#.*)?$", re.IGNORECASE)


class Verdict(StrEnum):
    """Whether one page may be fetched."""

    ALLOWED = "allowed"
    DISALLOWED = "disallowed"
    UNREACHABLE = "unreachable"


class PageFetcher(Protocol):
    """What robots and full-text fetching need from :class:`ingest.fetcher.HttpFetcher`."""

    async def fetch(self, url: str, conditional: Conditional = NO_VALIDATORS, *, accept: str | None = None,
                    max_bytes: int | None = None, timeout_s: float | None = None) -> FetchResult:
        """Fetch ``url``; never raises for what the network or server did (see :class:`ingest.fetcher.Fetcher`)."""
        ...


@dataclass(frozen=True)
class _Rules:
    parser: RobotFileParser | None
    """None: allow everything (4xx)."""
    unreachable: bool
    expires: float
    delay_s: float = 0.0
    """Seconds between the starts of two page fetches (Crawl-delay or Request-rate); 0 = none asked."""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class RobotsCache:
    """Answers :meth:`check` for page URLs; see the module docstring."""

    def __init__(self, fetcher: PageFetcher, user_agent: str, ttl_s: float,
                 slot: Callable[[str], AbstractAsyncContextManager[Any]] | None = None) -> None:
        self._fetcher = fetcher
        self._slot = slot
        self._agent = user_agent
        self._ttl = ttl_s
        self._rules: dict[str, _Rules] = {}
        self._pending: dict[str, asyncio.Future[_Rules]] = {}
        self.fetches = 0

    async def check(self, url: str) -> Verdict:
        """The verdict for ``url`` (fetching the host's robots.txt when not cached or expired)."""
        origin = _origin(url)
        rules = self._rules.get(origin)
        if rules is None or rules.expires <= time.monotonic():
            rules = await self._load(origin)
        if rules.unreachable:
            return Verdict.UNREACHABLE
        if rules.parser is None or rules.parser.can_fetch(self._agent, url):
            return Verdict.ALLOWED
        return Verdict.DISALLOWED

    def crawl_delay(self, url: str) -> float:
        """Seconds this host asks between our requests (0 when none, or its robots.txt is not cached)."""
        rules = self._rules.get(_origin(url))
        return rules.delay_s if rules is not None else 0.0

    async def _load(self, origin: str) -> _Rules:
        pending = self._pending.get(origin)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[_Rules] = asyncio.get_running_loop().create_future()
        self._pending[origin] = fut
        try:
            rules = await self._fetch(origin)
            self._rules[origin] = rules
            fut.set_result(rules)
            return rules
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a cancelled poll must not log "exception never retrieved"
            raise
        finally:
            self._pending.pop(origin, None)
            if len(self._rules) > 50_000:  # hosts we have not seen for a while go first
                now = time.monotonic()
                self._rules = {k: v for k, v in self._rules.items() if v.expires > now}

    async def _fetch(self, origin: str) -> _Rules:
        self.fetches += 1
        # robots.txt is a request to the host like any other: it takes one of the host's slots.
        async with self._slot((urlsplit(origin).hostname or "").lower()) if self._slot else nullcontext():
            result = await self._fetcher.fetch(f"{origin}/robots.txt", accept="text/plain, */*;q=0.5",
                                               max_bytes=MAX_ROBOTS_BYTES, timeout_s=ROBOTS_TIMEOUT_S)
        expires = time.monotonic() + self._ttl
        if result.outcome is Outcome.OK:
            parser = RobotFileParser()
            parser.parse([_whole_delay(line) for line in result.body.decode("utf-8", "replace").splitlines()])
            return _Rules(parser, False, expires, _delay(parser, self._agent))
        if result.outcome is Outcome.TOO_LARGE:
            # Over the cap: RFC 9309 lets us parse the first 500 KiB; we keep it simpler and allow.
            return _Rules(None, False, expires)
        if result.status is not None and 400 <= result.status < 500 and result.status != 429:
            return _Rules(None, False, expires)
        # 5xx, 429, timeout, network, unsafe redirect: unreachable. Look again sooner than a full TTL.
        return _Rules(None, True, time.monotonic() + min(self._ttl, 600.0))


def _whole_delay(line: str) -> str:
    """``Crawl-delay: 1.5`` as ``Crawl-delay: 2``: the standard parser reads whole seconds only (round up: polite)."""
    m = _FRACTION.match(line)
    return f"{m.group(1)}{math.ceil(float(m.group(2)))}" if m else line


def _delay(parser: RobotFileParser, agent: str) -> float:
    """The larger of Crawl-delay and Request-rate's seconds per request, for our group (else ``*``)."""
    delays = [0.0]
    try:
        crawl = parser.crawl_delay(agent)
        if crawl is not None:
            delays.append(float(crawl))
        rate = parser.request_rate(agent)
        if rate is not None and rate.requests > 0:
            delays.append(rate.seconds / rate.requests)
    except (TypeError, ValueError):  # a malformed value is no delay asked
        pass
    # Negative or not-a-number values mean nothing; a day between requests is as slow as we will go.
    return min(max(d for d in delays if d == d), 86400.0)
