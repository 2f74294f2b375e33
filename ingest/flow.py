"""One feed's poll, assembled in :func:`pipeline`: read top to bottom, it is the whole ingest flow.

    fetch (conditional GET) -> parse -> normalize -> dedup claim -> full-text pages -> produce (Kafka ack)
        -> mark seen -> schedule (validators, next check) -> save the feed state

Nothing before the Kafka acknowledgement is remembered as done: a crash or a failed produce leaves the feed's
previous state (old ETag, old due time) and lapsing claims, so the feed is fetched again and its entries are
published then. Every other way a poll can end (304, 410, a failed fetch, a body identical to the last one,
one that is no feed, a failed produce) is one method of :class:`ingest.outcomes.Outcomes`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, TypeVar

from ingest.dedup import SeenStore
from ingest.fetcher import Conditional, Fetcher, FetchResult, Outcome
from ingest.normalize import normalize
from ingest.outcomes import Outcomes, body_digest
from ingest.pages import PageHold
from ingest.parser import ParseError
from ingest.read import Read, claim, parse_newest
from ingest.report import PollReport
from ingest.sink import Sink
from ingest.state import FeedState, StateStore
from wirewatch import metrics
from wirewatch.log import get_logger
from wirewatch.records import Feed
from wirewatch.settings import IngestSettings

log = get_logger("ingest")
T = TypeVar("T")
Poll = Callable[[Feed, FeedState], Awaitable[tuple[PollReport, FeedState]]]
"""Polls a feed from its state; returns what it did and the state it saved. Never raises for feed problems."""


async def _in(pool: Executor, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def pipeline(cfg: IngestSettings, fetcher: Fetcher, seen: SeenStore, pages: PageHold, sink: Sink,
             outcomes: Outcomes, states: StateStore, *, io: Executor, cpu: Executor) -> Poll:
    """One poll: fetch -> parse -> normalize -> claim -> pages -> produce -> mark seen -> schedule -> save."""

    def read(feed: Feed, st: FeedState, result: FetchResult, fetched: datetime) -> Read:  # in a parse thread
        parsed = parse_newest(result, cfg.max_entries)                                   # parse (raises)
        items, bad = normalize(parsed, feed_url=st.url, identity_feed_url=st.identity_url or st.url,
                               feed_id=feed.id, feed_name=feed.name, fetched_at=fetched, cfg=cfg)  # normalize
        claimed = claim(seen, items, fetched=fetched, read_before=bool(st.last_success_at),
                        seen_ttl_s=cfg.seen_ttl_s)                                       # dedup claim
        return Read(parsed, claimed, len(bad))

    async def fresh(feed: Feed, st: FeedState, result: FetchResult, now: float,
                    flog: Any) -> tuple[PollReport, FeedState]:
        digest = body_digest(result.body)
        if outcomes.is_unchanged(st, digest, now):
            return outcomes.unchanged(feed, st, result, now, flog)                      # same bytes: not parsed
        try:
            got = await _in(cpu, read, feed, st, result, datetime.fromtimestamp(now, UTC))
        except ParseError as exc:
            return outcomes.parse_failed(feed, st, exc, now, flog)
        outcomes.parsed(got, flog)
        send, done = got.claimed.to_publish()                                            # new and updated
        send, later = await pages.hold(feed, send)                                       # full-text pages
        started = time.monotonic()
        try:
            await sink.publish(send)                                                     # produce: Kafka ack
        except Exception as exc:  # noqa: BLE001 - any failure to confirm means nothing was published
            await _in(io, seen.release, [a for a, _ in done])
            return outcomes.publish_failed(feed, st, exc, len(send), now, flog)
        await _in(io, seen.commit, done)                                                 # mark seen
        pages.follow_up(later)                                                           # late pages: updates
        metrics.INGEST_PROCESS_SECONDS.observe(time.monotonic() - started + result.elapsed_s)
        return outcomes.published(feed, st, result, got, send, digest, now, flog)        # schedule

    async def poll(feed: Feed, st: FeedState) -> tuple[PollReport, FeedState]:
        flog = log.bind(feed_id=feed.id)
        now = time.time()
        result = await fetcher.fetch(st.url, Conditional(st.etag, st.last_modified))    # fetch
        metrics.INGEST_FETCH_SECONDS.observe(result.elapsed_s)
        st = st.with_(fetches=st.fetches + 1, last_outcome=result.outcome.value)
        if result.outcome is Outcome.OK:
            report, st = await fresh(feed, st, result, now, flog)
        elif result.outcome is Outcome.NOT_MODIFIED:
            report, st = outcomes.not_modified(feed, st, result, now, flog)
        elif result.outcome is Outcome.GONE:
            report, st = await outcomes.gone(feed, st, result, now, flog)
        else:
            report, st = outcomes.failed(st, result, now, flog)
        if result.moved_to and result.outcome in (Outcome.OK, Outcome.NOT_MODIFIED):
            st = await outcomes.moved(feed, st, result.moved_to, flog)
        await _in(io, states.save, st)                                                   # save the feed state
        return report, st

    return poll
