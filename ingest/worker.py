"""The ingest worker: the long-lived parts of ingest, and the loop that dispatches due feeds to the flow.

One feed's poll is :func:`ingest.flow.pipeline`, top to bottom. The run loop (:meth:`IngestWorker.run`)
dispatches due feeds under a global and a per-host concurrency limit and follows the feeds registry for hot
reload; :meth:`IngestWorker.close` releases the parts in the reverse order of their start.
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
from typing import Any

import redis

from ingest.dedup import SeenStore
from ingest.fetcher import Fetcher, HttpFetcher
from ingest.flow import pipeline
from ingest.fulltext import FullText, RedisPageCache
from ingest.hosts import HostSlots
from ingest.outcomes import Outcomes
from ingest.pages import PageHold, host_of
from ingest.report import PollReport
from ingest.scheduler import DueQueue, Policy
from ingest.sink import KafkaSink, Sink
from ingest.state import FeedState, StateStore, state_for
from wirewatch import metrics
from wirewatch import registry as regmod
from wirewatch import state as wstate
from wirewatch.identity import feed_id as make_feed_id
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Feed
from wirewatch.settings import FeedConfig, Settings

log = get_logger("ingest")


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


class IngestWorker:
    """Owns ingest's long-lived parts and their order of start and stop; polls this shard's feeds forever."""

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
        self.pages = PageHold(self.cfg, self.fulltext, self.hosts, self.sink)
        outcomes = Outcomes(self.policy, self.registry, self._io, forget=self._forget, relocated=self._relocated)
        self._poll = pipeline(self.cfg, self.fetcher, self.seen, self.pages, self.sink, outcomes, self.states,
                              io=self._io, cpu=self._cpu)
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self.polls = 0
        self.watch_interval_s = 1.0
        self._watcher: regmod.Watcher[Feed] | None = None

    async def _in(self, pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def poll(self, feed: Feed) -> PollReport:
        """Poll one feed through :func:`ingest.flow.pipeline`. Never raises for feed or network problems."""
        report, st = await self._poll(feed, state_for(feed, self.state.get(feed.id)))
        self.state[feed.id] = st
        self.polls += 1
        return report

    def _forget(self, fid: str) -> None:  # the feed is gone (410): no more polls
        self.queue.discard(fid)
        self.feeds.pop(fid, None)

    def _relocated(self, feed: Feed) -> None:  # the feed moved (301/308) and the registry took the move
        self.feeds[feed.id] = feed

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

    def _start(self, fid: str) -> None:
        feed = self.feeds.get(fid)
        if feed is None or fid in self._inflight:
            return
        host = host_of(feed)
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
            st = state_for(feed, self.state.get(feed.id))
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
        await self.pages.drain()
        aclose = getattr(self.fetcher, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._page_fetcher is None:
            await self.fulltext.aclose()
        await self.sink.aclose()
        self._io.shutdown(wait=False)
        self._cpu.shutdown(wait=False)
