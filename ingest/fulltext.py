"""Thin feeds: an article's own page, fetched politely and reduced to its main text (``Article.content``).

For one article (:meth:`FullText.page`)::

    cache (by article id) -> robots.txt (per host, TTL) -> Crawl-delay turn (per host, in the cache)
        -> host slot (shared with feed polls) -> conditional GET (SSRF guard, time and byte caps)
        -> extraction (CPU pool) -> cache

Every way this can fail is an outcome (:class:`Page.outcome`, the ``outcome`` label of
``wirewatch_ingest_fulltext_total``), logged with the feed and article ids; nothing here raises for what a
site did, and the article goes on with the feed's text. A page is fetched once however many feeds carry it:
the article id derives from the canonical URL, and the result (text or failure) is cached under it in Redis,
failures for ``full_text_retry_s`` only (``busy`` and ``crawl_delay``, which say nothing about the page, are
not cached). Concurrent asks in one process share one fetch; across processes a
short claim key keeps a second worker from fetching the same page at the same moment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis

from ingest.extract import Extraction, extract
from ingest.fetcher import Conditional, Outcome, check_url
from ingest.hosts import Pacer
from ingest.robots import PageFetcher, RobotsCache, Verdict
from wirewatch import metrics
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Article, Feed
from wirewatch.settings import IngestSettings, Settings
from wirewatch.state import key

log = get_logger("ingest.fulltext")
ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
USABLE = ("ok", "cached", "not_modified")
TRANSIENT = ("busy", "crawl_delay")
CRAWL_QUEUE_S = 60.0
"""A page whose Crawl-delay turn is further away than this is not fetched (outcome ``crawl_delay``)."""
_TITLE_JOINERS = " \t:|-\u2013\u2014\u00b7"
_FETCH_OUTCOMES = {Outcome.TIMEOUT: "timeout", Outcome.TOO_LARGE: "too_large", Outcome.BAD_URL: "blocked",
                   Outcome.TOO_MANY_REDIRECTS: "redirects", Outcome.BAD_ENCODING: "bad_encoding",
                   Outcome.NETWORK: "network", Outcome.RATE_LIMITED: "http_error", Outcome.GONE: "http_error",
                   Outcome.CLIENT_ERROR: "http_error", Outcome.SERVER_ERROR: "http_error"}


@dataclass(frozen=True)
class Page:
    """What became of one article's page: ``text`` is non-empty only for a usable outcome."""

    outcome: str
    text: str = ""
    etag: str | None = None
    last_modified: str | None = None
    elapsed_s: float = 0.0

    @property
    def usable(self) -> bool:
        """True when ``text`` is the page's main text."""
        return self.outcome in USABLE and bool(self.text)


class PageCache(Protocol):
    """Pages by article id, shared by every feed (and, in Redis, every worker).

    ``get`` returns None for an unknown id; ``put`` keeps a page ``ttl_s``; ``claim`` returns True for the
    one caller that should fetch (until ``ttl_s`` passes, ``put`` lands or that caller calls ``release``).
    Each may block (run it off the loop).
    """

    def get(self, article_id: str) -> Page | None:
        """The cached page, or None."""
        ...

    def put(self, article_id: str, page: Page, ttl_s: int) -> None:
        """Keep ``page`` for ``ttl_s``."""
        ...

    def claim(self, article_id: str, ttl_s: int) -> bool:
        """True when nobody else is fetching this page now."""
        ...

    def release(self, article_id: str) -> None:
        """Give up a claim without a result (the page was not fetched, for a reason that is not the page's)."""
        ...

    def turn(self, host: str, delay_s: float, max_wait_s: float) -> float | None:
        """Reserve the next Crawl-delay turn for ``host``: seconds to wait for it, or None.

        None: the turn is more than ``max_wait_s`` away, and nothing is reserved. Turns are ``delay_s`` apart
        across every user of the cache.
        """
        ...


def _dump(page: Page) -> str:
    return json.dumps({"o": page.outcome, "t": page.text, "e": page.etag, "m": page.last_modified})


def _load(raw: bytes | str) -> Page:
    d = json.loads(raw)
    return Page(str(d["o"]), str(d.get("t") or ""), d.get("e"), d.get("m"))


class MemoryPageCache:
    """A :class:`PageCache` in one process (tests, ``feeds parse``)."""

    def __init__(self) -> None:
        self._pages: dict[str, tuple[str, float]] = {}
        self._claims: dict[str, float] = {}
        self._pacers: dict[float, Pacer] = {}

    def get(self, article_id: str) -> Page | None:
        """See :class:`PageCache`."""
        got = self._pages.get(article_id)
        return _load(got[0]) if got and got[1] > time.monotonic() else None

    def put(self, article_id: str, page: Page, ttl_s: int) -> None:
        """See :class:`PageCache`."""
        self._pages[article_id] = (_dump(page), time.monotonic() + ttl_s)
        self._claims.pop(article_id, None)

    def claim(self, article_id: str, ttl_s: int) -> bool:
        """See :class:`PageCache`."""
        now = time.monotonic()
        if self._claims.get(article_id, 0.0) > now:
            return False
        self._claims[article_id] = now + ttl_s
        return True

    def release(self, article_id: str) -> None:
        """See :class:`PageCache`."""
        self._claims.pop(article_id, None)

    def turn(self, host: str, delay_s: float, max_wait_s: float) -> float | None:
        """See :class:`PageCache`."""
        return self._pacers.setdefault(max_wait_s, Pacer(max_wait_s)).turn(host, delay_s)


# The next free turn of a host, on Redis's clock so that every worker agrees; a turn too far away is refused.
_TURN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local delay, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local at = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
if at - now > most then return false end
redis.call('SET', KEYS[1], string.format('%.6f', at + delay), 'PX', math.ceil((at + delay - now) * 1000) + 1000)
return string.format('%.6f', at - now)
"""


class RedisPageCache:
    """A :class:`PageCache` in Redis, shared by every worker.

    Keys: ``ft:<article id>`` (the page JSON), ``ft:claim:<article id>`` and ``ft:turn:<host>`` (the host's
    next Crawl-delay turn).
    """

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._s = settings
        self._turn = client.register_script(_TURN)

    def get(self, article_id: str) -> Page | None:
        """See :class:`PageCache`."""
        raw = self._r.get(key(self._s, "ft", article_id))
        return _load(raw) if raw is not None else None

    def put(self, article_id: str, page: Page, ttl_s: int) -> None:
        """See :class:`PageCache`."""
        pipe = self._r.pipeline(transaction=False)
        pipe.set(key(self._s, "ft", article_id), _dump(page), ex=ttl_s)
        pipe.delete(key(self._s, "ft", "claim", article_id))
        pipe.execute()

    def claim(self, article_id: str, ttl_s: int) -> bool:
        """See :class:`PageCache`."""
        return bool(self._r.set(key(self._s, "ft", "claim", article_id), b"1", nx=True, ex=max(1, ttl_s)))

    def release(self, article_id: str) -> None:
        """See :class:`PageCache`."""
        self._r.delete(key(self._s, "ft", "claim", article_id))

    def turn(self, host: str, delay_s: float, max_wait_s: float) -> float | None:
        """See :class:`PageCache`."""
        got = self._turn(keys=[key(self._s, "ft", "turn", host)], args=[f"{delay_s:.6f}", f"{max_wait_s:.6f}"])
        return None if got is None else float(got)


def wanted(feed: Feed, article: Article, cfg: IngestSettings) -> bool:
    """True when this article's page should be read (the feed's mode, else the ingest default)."""
    mode = feed.full_text or cfg.full_text
    if mode == "never" or not article.url or check_url(article.url):
        return False
    return mode == "always" or len(article.summary) < cfg.full_text_min_summary_chars


Slot = Callable[[str], AbstractAsyncContextManager[Any]]
Runner = Callable[..., Awaitable[Any]]


class FullText:
    """Pages for articles; see the module docstring.

    ``slot(host)`` is the per-host politeness limit shared with feed polls (an async context manager);
    ``io`` and ``cpu`` are the executors for Redis calls and for extraction.
    """

    def __init__(self, cfg: IngestSettings, fetcher: PageFetcher, cache: PageCache, *, slot: Slot,
                 io: Executor | None = None, cpu: Executor | None = None) -> None:
        self.cfg = cfg
        self._fetcher = fetcher
        self._cache = cache
        self._slot = slot
        self._io = io
        self._cpu = cpu
        self.robots = RobotsCache(fetcher, cfg.user_agent, cfg.robots_ttl_s, slot)
        self._inflight: dict[str, asyncio.Task[Page]] = {}

    async def aclose(self) -> None:
        """Close the page fetcher's connections (when it has any to close)."""
        aclose = getattr(self._fetcher, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _run(self, pool: Executor | None, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def page(self, article: Article, *, revalidate: bool = False) -> Page:
        """The page of ``article`` (cached, or fetched now); ``revalidate`` re-asks the site conditionally.

        Counts the outcome and logs failures with the feed and article ids. Never raises for a site's doing.
        """
        task = self._inflight.get(article.id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._page(article, revalidate))
            self._inflight[article.id] = task
            task.add_done_callback(lambda _: self._inflight.pop(article.id, None))
        return await asyncio.shield(task)

    async def _page(self, article: Article, revalidate: bool) -> Page:
        started = time.monotonic()
        plog = log.bind(feed_id=article.feed_id, article_id=article.id)
        try:
            page = await self._resolve(article, revalidate)
        except Exception as exc:  # noqa: BLE001 - Redis down, a bug: the article goes on with the feed's text
            plog.error("fulltext_crashed", error=describe_error(exc)[:300])
            page = Page("error")
        page = Page(page.outcome, page.text, page.etag, page.last_modified, time.monotonic() - started)
        metrics.INGEST_FULLTEXT.labels(page.outcome).inc()
        metrics.INGEST_FULLTEXT_SECONDS.observe(page.elapsed_s)
        if page.usable:
            plog.debug("fulltext_read", outcome=page.outcome, chars=len(page.text), elapsed_s=round(page.elapsed_s, 3))
        else:
            plog.info("fulltext_unusable", outcome=page.outcome, url=(article.url or "")[:300],
                      elapsed_s=round(page.elapsed_s, 3))
        return page

    async def _resolve(self, article: Article, revalidate: bool) -> Page:
        assert article.url is not None
        cached = await self._run(self._io, self._cache.get, article.id)
        # Revalidate (an entry came back changed) only where the site gave validators: else the cached text stands.
        if cached is not None and not (revalidate and cached.usable and (cached.etag or cached.last_modified)):
            return Page("cached", cached.text, cached.etag, cached.last_modified) if cached.usable else cached
        # The claim outlives the longest this fetch can take, a Crawl-delay turn included.
        hold = int(self.cfg.full_text_timeout_s + 1 + CRAWL_QUEUE_S)
        claimed = cached is None
        if claimed and not await self._run(self._io, self._cache.claim, article.id, hold):
            return await self._wait_for_other(article.id)
        page = await self._fetch(article.url, cached)
        if page.outcome == "not_modified" and cached is not None:
            page = Page("not_modified", cached.text, cached.etag, cached.last_modified)
        if page.outcome in TRANSIENT:
            if claimed:  # nothing learnt about the page: the next ask (here or in another worker) tries afresh
                await self._run(self._io, self._cache.release, article.id)
            return page
        ttl = self.cfg.full_text_cache_ttl_s if page.usable else self.cfg.full_text_retry_s
        await self._run(self._io, self._cache.put, article.id, page, ttl)
        return page

    async def _wait_for_other(self, article_id: str) -> Page:
        """Another worker fetches this page right now: take its result when it lands (bounded)."""
        deadline = time.monotonic() + self.cfg.full_text_timeout_s + 1
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            got = await self._run(self._io, self._cache.get, article_id)
            if got is not None:
                return Page("cached", got.text, got.etag, got.last_modified) if got.usable else got
        return Page("busy")

    async def _fetch(self, url: str, cached: Page | None) -> Page:
        verdict = await self.robots.check(url)
        if verdict is Verdict.DISALLOWED:
            return Page("robots_disallowed")
        if verdict is Verdict.UNREACHABLE:
            return Page("robots_unreachable")
        host = (urlsplit(url).hostname or "").lower()
        delay = self.robots.crawl_delay(url)
        wait = await self._run(self._io, self._cache.turn, host, delay, CRAWL_QUEUE_S) if delay > 0 else 0.0
        if wait is None:
            return Page("crawl_delay")
        if wait:
            await asyncio.sleep(wait)
        conditional = Conditional(cached.etag, cached.last_modified) if cached is not None else Conditional()
        async with self._slot(host):
            result = await self._fetcher.fetch(url, conditional, accept=ACCEPT, max_bytes=self.cfg.full_text_max_bytes,
                                               timeout_s=self.cfg.full_text_timeout_s)
        if result.outcome is Outcome.NOT_MODIFIED:
            return Page("not_modified", etag=result.etag or conditional.etag,
                        last_modified=result.last_modified or conditional.last_modified)
        if result.outcome is not Outcome.OK:
            return Page(_FETCH_OUTCOMES.get(result.outcome, "http_error"))
        got: Extraction = await self._run(self._cpu, lambda: extract(
            result.body, result.headers, result.url, min_chars=self.cfg.full_text_min_chars,
            max_chars=self.cfg.content_max_chars))
        return Page(got.outcome, got.text, result.etag, result.last_modified)


def after_title(text: str, title: str) -> str:
    """``text`` less a leading copy of ``title`` (the classifier embeds the title already; once is enough)."""
    head = title.strip()
    if head and text[: len(head)].casefold() == head.casefold():
        rest = text[len(head):].lstrip(_TITLE_JOINERS)
        if rest:
            return rest
    return text


def with_page(article: Article, page: Page, *, update: bool | None = None) -> Article:
    """``article`` carrying the page's text as its content (unchanged when the page is not usable).

    The page's own headline is gone already (:mod:`ingest.extract`); a feed title that still leads the text
    is cut here, per article, since feeds carrying one page may title it differently.
    """
    changes: dict[str, Any] = {}
    if page.usable:
        changes["content"] = after_title(page.text, article.title)
    if update is not None:
        changes["update"] = update
    return article.model_copy(update=changes) if changes else article
