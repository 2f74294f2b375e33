"""The ingest worker: poll due feeds, publish their new entries to Kafka, advance feed state after the ack.

One feed's poll, top to bottom (:meth:`IngestWorker.poll`)::

    fetch (conditional GET) -> parse -> normalize -> claim (seen store) -> publish (Kafka ack)
        -> commit seen digests -> save feed state (validators, next due)

Nothing before the Kafka acknowledgement is remembered as done: a crash or a failed produce leaves the feed's
previous state (old ETag, old due time) and lapsing claims, so the feed is fetched again and its entries are
published then. The run loop (:meth:`IngestWorker.run`) dispatches due feeds under a global and a per-host
concurrency limit and follows the feeds registry for hot reload.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis

from ingest.dedup import Fate, SeenStore
from ingest.fetcher import Conditional, Fetcher, FetchResult, HttpFetcher, Outcome, check_url
from ingest.fulltext import FullText, Page, RedisPageCache, wanted, with_page
from ingest.hosts import HostSlots
from ingest.normalize import Normalized, normalize
from ingest.parser import ParsedFeed, ParseError, parse
from ingest.scheduler import DueQueue, Observation, Policy, cache_hint
from ingest.sink import KafkaSink, Sink
from ingest.state import FeedState, StateStore
from wirewatch import metrics
from wirewatch import registry as regmod
from wirewatch import state as wstate
from wirewatch.identity import feed_id as make_feed_id
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Article, Feed
from wirewatch.settings import FeedConfig, Settings

log = get_logger("ingest")
T = TypeVar("T")
BUSY_RETRY_S = 15.0
UNCHANGED_REREAD_S = 86400.0


def config_feeds(feeds: Iterable[FeedConfig]) -> list[Feed]:
    """Feed records for the feeds declared in the config file (to seed the registry)."""
    return [Feed(id=make_feed_id(f.url), url=f.url, name=f.name or "", interval_s=f.interval_s, tags=f.tags,
                 enabled=f.enabled, full_text=f.full_text) for f in feeds]


def in_shard(feed_id: str, index: int, count: int) -> bool:
    """True when ``feed_id`` belongs to worker ``index`` of ``count``."""
    if count <= 1:
        return True
    try:
        return int(feed_id[:15], 16) % count == index
    except ValueError:
        return int(hashlib.blake2b(feed_id.encode(), digest_size=8).hexdigest(), 16) % count == index


@dataclass(frozen=True)
class PollReport:
    """What one poll did (for logs, tests and the bench)."""

    feed_id: str
    outcome: str
    new: int = 0
    updated: int = 0
    seen: int = 0
    busy: int = 0
    stale: int = 0
    invalid: int = 0
    error: str = ""
    unchanged: bool = False
    """True when the body was byte-identical to the last one read, so it was not parsed again."""


class IngestWorker:
    """Polls this shard's feeds forever; see the module docstring."""

    def __init__(self, settings: Settings, *, fetcher: Fetcher | None = None, sink: Sink | None = None,
                 client: redis.Redis | None = None, policy: Policy | None = None) -> None:
        self.settings = settings
        self.cfg = settings.ingest
        self.client = client or wstate.connect(settings)
        self.fetcher: Fetcher = fetcher or HttpFetcher(self.cfg, allow=settings.api.url_allowlist)
        self.sink: Sink = sink or KafkaSink(settings)
        self.policy = policy or Policy(self.cfg)
        self.registry = regmod.feeds(self.client, settings)
        self.seen = SeenStore(self.client, settings)
        self.states = StateStore(self.client, settings)
        self.feeds: dict[str, Feed] = {}
        self.state: dict[str, FeedState] = {}
        self.queue = DueQueue()
        self._io = ThreadPoolExecutor(4, thread_name_prefix="ingest-io")
        self._cpu = ThreadPoolExecutor(2, thread_name_prefix="ingest-parse")
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self.hosts = HostSlots(self.cfg.per_host_concurrency, on_free=self._host_freed)
        self._host_wait: dict[str, deque[str]] = {}
        # Article pages go through the same HTTP client (and SSRF guard) as feeds when it is ours.
        self._page_fetcher = self.fetcher if isinstance(self.fetcher, HttpFetcher) else None
        pages = self._page_fetcher or HttpFetcher(self.cfg, allow=settings.api.url_allowlist)
        self.fulltext = FullText(self.cfg, pages, RedisPageCache(self.client, settings), slot=self.hosts.slot,
                                 io=self._io, cpu=self._cpu)
        self._followups: set[asyncio.Task[None]] = set()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self.polls = 0
        self.watch_interval_s = 1.0
        self._watcher: regmod.Watcher[Feed] | None = None

    # -- helpers ---------------------------------------------------------------------------------------
    async def _in(self, pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _state_of(self, feed: Feed) -> FeedState:
        st = self.state.get(feed.id)
        if st is None:
            st = FeedState(feed_id=feed.id, url=feed.url, identity_url=feed.url)
        elif st.url != feed.url and not st.identity_url:
            st = st.with_(identity_url=st.url)
        if st.url != feed.url:
            # The registry says the feed lives elsewhere now (an edit, or our own move): fresh validators.
            st = st.with_(url=feed.url, etag=None, last_modified=None)
        return st

    # -- one poll --------------------------------------------------------------------------------------
    async def poll(self, feed: Feed) -> PollReport:
        """Fetch one feed and publish what is new in it. Never raises for feed or network problems."""
        flog = log.bind(feed_id=feed.id)
        st = self._state_of(feed)
        now = time.time()
        result = await self.fetcher.fetch(st.url, Conditional(st.etag, st.last_modified))
        metrics.INGEST_FETCH_SECONDS.observe(result.elapsed_s)
        st = st.with_(fetches=st.fetches + 1, last_outcome=result.outcome.value)
        if result.outcome is Outcome.OK:
            report, st = await self._fresh(feed, st, result, now, flog)
        elif result.outcome is Outcome.NOT_MODIFIED:
            metrics.INGEST_FETCHES.labels("304").inc()
            st = self.policy.after_success(st, Observation(hint_s=self._hint(result, None, now)), now, feed.interval_s)
            report = PollReport(feed.id, "304")
            flog.debug("feed_not_modified", elapsed_s=round(result.elapsed_s, 3))
        elif result.outcome is Outcome.GONE:
            metrics.INGEST_FETCHES.labels("4xx").inc()
            st, report = await self._gone(feed, st, result, now, flog)
        else:
            st, report = self._failed(st, result, now, flog)
        if result.moved_to and result.outcome in (Outcome.OK, Outcome.NOT_MODIFIED):
            st = await self._moved(feed, st, result.moved_to, flog)
        await self._in(self._io, self.states.save, st)
        self.state[feed.id] = st
        self.polls += 1
        return report

    def _hint(self, result: FetchResult, parsed: ParsedFeed | None, now: float) -> float | None:
        hints = [h for h in (cache_hint(result.headers, now), parsed.ttl_s if parsed else None) if h]
        return max(hints) if hints else None

    def _failed(self, st: FeedState, result: FetchResult, now: float, flog: Any) -> tuple[FeedState, PollReport]:
        label = result.outcome.value
        metrics.INGEST_FETCHES.labels(label if label in ("4xx", "5xx") else label).inc()
        honour = result.retry_after_s if result.status in (429, 503) else None
        st = self.policy.after_error(st, now, honour).with_(last_error=f"{label}: {result.error}"[:500],
                                                            last_error_at=now)
        flog.warning("feed_fetch_failed", outcome=label, status=result.status, error=result.error[:300],
                     errors=st.errors, retry_in_s=round(st.next_due - now, 1))
        return st, PollReport(st.feed_id, label, error=result.error)

    async def _gone(self, feed: Feed, st: FeedState, result: FetchResult, now: float,
                    flog: Any) -> tuple[FeedState, PollReport]:
        reason = f"410 Gone at {datetime.fromtimestamp(now, UTC):%Y-%m-%dT%H:%M:%SZ} from {result.url}"[:500]
        # compare-and-set on the stored feed: an edit made meanwhile through the API is kept, not overwritten
        await self._in(self._io, self.registry.update, feed.id,
                       lambda current: current.model_copy(update={"enabled": False, "disabled_reason": reason,
                                                                  "updated_at": datetime.now(UTC)}))
        metrics.INGEST_FEEDS_DISABLED.labels("gone").inc()
        flog.warning("feed_disabled", reason=reason)
        self.queue.discard(feed.id)
        self.feeds.pop(feed.id, None)
        st = st.with_(disabled_reason=reason, last_error=reason, last_error_at=now, last_attempt_at=now, next_due=0.0)
        return st, PollReport(feed.id, "410", error=reason)

    async def _moved(self, feed: Feed, st: FeedState, target: str, flog: Any) -> FeedState:
        problem = check_url(target)
        if problem:
            flog.warning("feed_move_refused", target=target[:300], reason=problem)
            return st
        def move(current: Feed) -> Feed:  # only a feed still at the URL we fetched; an API edit wins
            if current.url != feed.url:
                return current
            return current.model_copy(update={"url": target, "updated_at": datetime.now(UTC)})

        done = await self._in(self._io, self.registry.update, feed.id, move)
        if done is not None and done[0].url == target:
            self.feeds[feed.id] = done[0]
        metrics.INGEST_URL_MOVES.inc()
        flog.info("feed_moved", old=feed.url[:300], new=target[:300])
        return st.with_(url=target, identity_url=st.identity_url or feed.url)

    def _prepare(self, feed: Feed, st: FeedState, result: FetchResult,
                 fetched: datetime) -> tuple[ParsedFeed, list[Normalized], list[Fate], int, int]:
        """Parse, normalize and claim (runs in a worker thread). Raises ParseError."""
        parsed = parse(result.body, result.headers, result.url)
        if len(parsed.entries) > self.cfg.max_entries:
            # Feeds list newest first: the head is what is news; the tail of a huge archive is not.
            metrics.INGEST_ITEMS.labels("truncated").inc(len(parsed.entries) - self.cfg.max_entries)
            parsed = replace(parsed, entries=parsed.entries[: self.cfg.max_entries])
        items, bad = normalize(parsed, feed_url=st.url, identity_feed_url=st.identity_url or st.url,
                               feed_id=feed.id, feed_name=feed.name, fetched_at=fetched, cfg=self.cfg)
        fates = self.seen.claim([(n.article.id, n.digest) for n in items])
        stale = 0
        if st.last_success_at:
            # Never seen, dated before the seen store's memory, in a feed we already read: a re-served ancient
            # whose seen key lapsed, not news. (A feed's first read publishes everything it lists.)
            oldest = fetched - timedelta(seconds=self.cfg.seen_ttl_s)
            ancient = [i for i, (n, f) in enumerate(zip(items, fates, strict=True))
                       if f is Fate.NEW and not n.article.published_estimated and n.article.published_at < oldest]
            if ancient:
                self.seen.release([items[i].article.id for i in ancient])
                drop = set(ancient)
                items = [n for i, n in enumerate(items) if i not in drop]
                fates = [f for i, f in enumerate(fates) if i not in drop]
                stale = len(drop)
        return parsed, items, fates, stale, len(bad)

    async def _fresh(self, feed: Feed, st: FeedState, result: FetchResult, now: float,
                     flog: Any) -> tuple[PollReport, FeedState]:
        fetched = datetime.fromtimestamp(now, UTC)
        digest = hashlib.blake2b(result.body, digest_size=16).hexdigest()
        if digest == st.body_hash and st.last_success_at and now - st.read_at < UNCHANGED_REREAD_S:
            # The same bytes as last time from a server without validators: nothing to parse. A full read
            # still happens daily, which refreshes the entries' seen marks long before they expire.
            metrics.INGEST_FETCHES.labels("200").inc()
            hint = self._hint(result, None, now)
            st = self.policy.after_success(st, Observation(hint_s=hint), now, feed.interval_s)
            flog.debug("feed_unchanged", elapsed_s=round(result.elapsed_s, 3))
            return PollReport(feed.id, "200", unchanged=True), st.with_(etag=result.etag,
                                                                        last_modified=result.last_modified)
        try:
            parsed, items, fates, stale, invalid = await self._in(self._cpu, self._prepare, feed, st, result, fetched)
        except ParseError as exc:
            metrics.INGEST_FETCHES.labels("parse_error").inc()
            st = self.policy.after_error(st, now).with_(last_error=f"parse_error: {exc}"[:500], last_error_at=now,
                                                        last_outcome="parse_error")
            flog.warning("feed_parse_failed", error=str(exc)[:300], errors=st.errors)
            return PollReport(feed.id, "parse_error", error=str(exc)), st
        metrics.INGEST_FETCHES.labels("200").inc()
        if parsed.problem:
            metrics.INGEST_PARSE_PROBLEMS.labels(parsed.problem).inc()
        if parsed.hostile:
            metrics.INGEST_PARSE_PROBLEMS.labels("entity_declarations").inc()
            flog.warning("feed_entities_removed", detail="DOCTYPE with entity declarations cut before parsing")
        send: list[Article] = []
        done: list[tuple[str, str]] = []
        counts = {f: 0 for f in Fate}
        for n, fate in zip(items, fates, strict=True):
            counts[fate] += 1
            if fate is Fate.NEW or fate is Fate.UPDATED:
                send.append(n.article.model_copy(update={"update": True}) if fate is Fate.UPDATED else n.article)
                done.append((n.article.id, n.digest))
        send.reverse()  # feeds list newest first; publish oldest first
        send, later = await self._with_pages(feed, send)
        started = time.monotonic()
        try:
            await self.sink.publish(send)
        except Exception as exc:  # noqa: BLE001 - any failure to confirm means nothing was published
            await self._in(self._io, self.seen.release, [a for a, _ in done])
            st = self.policy.after_error(st, now).with_(last_error="publish: " + describe_error(exc)[:500],
                                                        last_error_at=now, last_outcome="publish_error")
            flog.error("feed_publish_failed", error=describe_error(exc)[:300], items=len(send))
            return PollReport(feed.id, "publish_error", error=str(exc)), st
        await self._in(self._io, self.seen.commit, done)
        for article, task in later:
            self._spawn(self._follow_up(article, task))
        metrics.INGEST_PROCESS_SECONDS.observe(time.monotonic() - started + result.elapsed_s)
        if st.last_success_at:
            # Publication-to-fetch delay, for entries that are news to us (a feed's first read lists history).
            for a in send:
                if not a.update and not a.published_estimated:
                    metrics.observe_hop("fetch", now - a.published_at.timestamp())
        for fate, label in ((Fate.NEW, "new"), (Fate.UPDATED, "updated"), (Fate.SEEN, "seen"), (Fate.BUSY, "busy")):
            if counts[fate]:
                metrics.INGEST_ITEMS.labels(label).inc(counts[fate])
        if stale:
            metrics.INGEST_ITEMS.labels("stale").inc(stale)
        if invalid:
            metrics.INGEST_ITEMS.labels("invalid").inc(invalid)
        dates = [n.article.published_at.timestamp() for n in items if not n.article.published_estimated]
        obs = Observation(new=counts[Fate.NEW], entries=len(items),
                          dated_span_s=(max(dates) - min(dates)) if len(dates) >= 2 else None, dated=len(dates),
                          hint_s=self._hint(result, parsed, now))
        st = self.policy.after_success(st, obs, now, feed.interval_s)
        st = st.with_(entries=len(parsed.entries), problem=parsed.problem or "",
                      items_new=st.items_new + counts[Fate.NEW], items_updated=st.items_updated + counts[Fate.UPDATED],
                      last_new_at=now if counts[Fate.NEW] else st.last_new_at)
        if counts[Fate.BUSY]:
            # Another worker holds some entries unacknowledged: keep the old validators and look again soon,
            # so they are not skipped if that worker dies.
            st = self.policy.retry_soon(st, now, BUSY_RETRY_S)
        else:
            st = st.with_(etag=result.etag, last_modified=result.last_modified, body_hash=digest, read_at=now)
        flog.info("feed_polled", status=200, new=counts[Fate.NEW], updated=counts[Fate.UPDATED],
                  seen=counts[Fate.SEEN], busy=counts[Fate.BUSY], stale=stale, invalid=invalid,
                  problem=parsed.problem, elapsed_s=round(result.elapsed_s, 3),
                  next_in_s=round(st.next_due - now, 1))
        return PollReport(feed.id, "200", counts[Fate.NEW], counts[Fate.UPDATED], counts[Fate.SEEN],
                          counts[Fate.BUSY], stale, invalid), st

    # -- article pages ---------------------------------------------------------------------------------
    async def _with_pages(self, feed: Feed, send: list[Article]) -> tuple[list[Article], list[tuple[Article, Any]]]:
        """Hold ``send`` up to ``full_text_wait_s`` for the pages of its thin articles (docs/fulltext.md).

        Returns the articles to publish now (with page text where it came in time) and, for each page still
        on its way, the article as published and the task that will bring its page (published as an update).
        """
        want = [i for i, a in enumerate(send) if wanted(feed, a, self.cfg)][-self.cfg.full_text_max_per_poll:]
        if not want or not self.cfg.full_text_max_per_poll:
            return send, []
        loop = asyncio.get_running_loop()
        tasks = {i: loop.create_task(self.fulltext.page(send[i], revalidate=send[i].update)) for i in want}
        started = time.monotonic()
        if self.cfg.full_text_wait_s > 0:
            async with self.hosts.lend(self._host(feed)):  # the feed's own request is over: pages may use its slot
                await asyncio.wait(tasks.values(), timeout=self.cfg.full_text_wait_s)
        metrics.INGEST_FULLTEXT_HELD_SECONDS.observe(time.monotonic() - started)
        out, later = list(send), []
        for i, task in tasks.items():
            if task.done():
                out[i] = with_page(out[i], task.result())
            else:
                later.append((out[i], task))
        return out, later

    async def _follow_up(self, article: Article, task: asyncio.Task[Page]) -> None:
        """Publish ``article`` once more, as an update with its page text, when the page arrives usable."""
        page = await task
        if not page.usable:
            return
        try:
            await self.sink.publish([with_page(article, page, update=True)])
        except Exception as exc:  # noqa: BLE001 - the article is out with the feed's text; only the page is lost
            metrics.INGEST_FULLTEXT_UPDATES.labels("failed").inc()
            log.warning("fulltext_update_failed", feed_id=article.feed_id, article_id=article.id,
                        error=describe_error(exc)[:300])
            return
        metrics.INGEST_FULLTEXT_UPDATES.labels("published").inc()
        log.debug("fulltext_update_published", feed_id=article.feed_id, article_id=article.id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._followups.add(task)
        task.add_done_callback(self._followups.discard)

    # -- feed set --------------------------------------------------------------------------------------
    def apply_feeds(self, records: Sequence[Feed], now: float | None = None) -> None:
        """Make ``records`` (this shard's enabled ones) the polled set: schedule new ones, drop removed ones."""
        now = time.time() if now is None else now
        wanted = {f.id: f for f in records
                  if f.enabled and in_shard(f.id, self.cfg.shard_index, self.cfg.shard_count)}
        for fid in list(self.feeds):
            if fid not in wanted:
                self.feeds.pop(fid)
                self.queue.discard(fid)
                log.info("feed_unscheduled", feed_id=fid)
        spread = min(self.cfg.min_interval_s, 30.0)
        for fid, feed in wanted.items():
            known = fid in self.feeds
            self.feeds[fid] = feed
            if known:
                continue
            st = self.state.get(fid)
            if st is not None and st.disabled_reason:
                # Re-enabled (an operator fixed it): start afresh.
                st = st.with_(disabled_reason="", errors=0, next_due=0.0)
                self.state[fid] = st
            due = st.next_due if st is not None and st.next_due else self.policy.first_due(now, spread)
            if fid not in self._inflight:
                self.queue.schedule(fid, due)
            log.info("feed_scheduled", feed_id=fid, in_s=round(max(0.0, due - now), 1))
        metrics.INGEST_FEEDS.labels("enabled").set(len(self.feeds))
        if self._wakeup is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _on_registry_change(self, records: list[Feed]) -> None:
        if self._loop is None:
            self.apply_feeds(records)
        else:
            self._loop.call_soon_threadsafe(self.apply_feeds, records)

    # -- run loop --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop dispatching; in-flight polls finish, then :meth:`run` returns."""
        self._stop.set()
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def _host(self, feed: Feed) -> str:
        return (urlsplit(feed.url).hostname or "").lower()

    def _start(self, fid: str) -> None:
        feed = self.feeds.get(fid)
        if feed is None or fid in self._inflight:
            return
        host = self._host(feed)
        if not self.hosts.try_take(host):
            self._host_wait.setdefault(host, deque()).append(fid)
            return
        task = asyncio.get_running_loop().create_task(self._guarded(feed, host), name=f"poll-{fid}")
        self._inflight[fid] = task

    async def _guarded(self, feed: Feed, host: str) -> None:
        try:
            await self.poll(feed)
        except Exception as exc:  # noqa: BLE001 - Redis down, a bug: log, back off, keep the feed scheduled
            log.error("feed_poll_crashed", feed_id=feed.id, error=describe_error(exc)[:500])
            st = self._state_of(feed)
            self.state[feed.id] = self.policy.after_error(st, time.time()).with_(
                last_error="internal: " + describe_error(exc)[:500], last_error_at=time.time())
        finally:
            self._inflight.pop(feed.id, None)
            after = self.state.get(feed.id)
            if feed.id in self.feeds and after is not None and not after.disabled_reason:
                self.queue.schedule(feed.id, after.next_due)
            self.hosts.release(host)
            if self._wakeup is not None:
                self._wakeup.set()

    def _host_freed(self, host: str) -> None:
        waiting = self._host_wait.get(host)
        while waiting and not self._stop.is_set():
            nxt = waiting.popleft()
            if nxt in self.feeds and nxt not in self._inflight:
                self._start(nxt)
                break

    def _waiting(self) -> int:
        return sum(len(q) for q in self._host_wait.values())

    def _update_gauges(self, now: float) -> None:
        due, overdue = self.queue.count_due(now, self.cfg.min_interval_s)
        metrics.INGEST_FEEDS_DUE.set(due + self._waiting() + len(self._inflight))
        metrics.INGEST_FEEDS_OVERDUE.set(overdue)
        metrics.INGEST_FEEDS_QUIET.set(sum(1 for fid in self.feeds
                                           if fid in self.state and self.policy.is_quiet(self.state[fid], now)))

    async def startup(self) -> regmod.Watcher[Feed]:
        """Seed config feeds, load feed states, then load and follow the feeds registry (hot reload)."""
        seeded = await self._in(self._io, self.registry.seed, config_feeds(self.cfg.feeds))
        self.state = await self._in(self._io, self.states.load_all)
        watcher = regmod.Watcher(self.registry, self._on_registry_change, interval_s=self.watch_interval_s)
        self._watcher = watcher
        await self._in(self._io, watcher.start)
        await asyncio.sleep(0)  # let the first apply_feeds scheduled by the watcher run
        log.info("ingest_started", feeds=len(self.feeds), seeded=seeded, states=len(self.state),
                 shard=f"{self.cfg.shard_index}/{self.cfg.shard_count}")
        return watcher

    async def run(self) -> None:
        """Poll until :meth:`stop`; then wait for in-flight polls (bounded by the fetch deadline)."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        watcher = await self.startup()
        last_gauges = 0.0
        try:
            while not self._stop.is_set():
                now = time.time()
                free = self.cfg.concurrency - len(self._inflight)
                while free > 0:
                    batch = self.queue.pop_due(now, free)
                    if not batch:
                        break
                    for fid in batch:
                        self._start(fid)
                    free = self.cfg.concurrency - len(self._inflight)
                if now - last_gauges > 5:
                    self._update_gauges(now)
                    last_gauges = now
                nxt = self.queue.next_due()
                wait = 1.0 if nxt is None else min(1.0, max(0.0, nxt - time.time()))
                if free <= 0:
                    wait = 1.0
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
                except TimeoutError:
                    pass
        finally:
            watcher.stop()
            pending = list(self._inflight.values())
            if pending:
                log.info("ingest_draining", inflight=len(pending))
                await asyncio.wait(pending, timeout=self.cfg.fetch_timeout_s + 65)
            await self.close()
            log.info("ingest_stopped", polls=self.polls)

    async def close(self) -> None:
        """Stop following the registry; release the HTTP client, the producer and the thread pools."""
        if self._watcher is not None:
            self._watcher.stop()
        if self._followups:
            # Pages still on their way: their articles are out already; give them the fetch deadline, no more.
            await asyncio.wait(list(self._followups), timeout=self.cfg.full_text_timeout_s + 1)
            for t in list(self._followups):
                t.cancel()
        aclose = getattr(self.fetcher, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._page_fetcher is None:
            await self.fulltext.aclose()
        await self.sink.aclose()
        self._io.shutdown(wait=False)
        self._cpu.shutdown(wait=False)
