"""How each way a poll can end changes the feed's state (next check, validators, errors), counted and logged.

:func:`ingest.flow.pipeline` calls one of these at each of its exits; :meth:`Outcomes.published` is the
schedule step of a poll that got its entries out. Only :meth:`Outcomes.gone` and :meth:`Outcomes.moved`
write anywhere (the feeds registry, compare-and-set, so an API edit made meanwhile wins).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from ingest.dedup import Fate
from ingest.fetcher import FetchResult, check_url
from ingest.parser import ParsedFeed, ParseError
from ingest.read import Read
from ingest.report import PollReport
from ingest.scheduler import Observation, Policy, cache_hint
from ingest.state import FeedState
from wirewatch import metrics
from wirewatch import registry as regmod
from wirewatch.log import describe_error
from wirewatch.records import Article, Feed

BUSY_RETRY_S = 15.0
UNCHANGED_REREAD_S = 86400.0


def body_digest(body: bytes) -> str:
    """The digest that tells a byte-identical body from the last one read."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def hint_s(result: FetchResult, parsed: ParsedFeed | None, now: float) -> float | None:
    """The longest of the server's cache hint and the feed's own TTL, if either is given."""
    hints = [h for h in (cache_hint(result.headers, now), parsed.ttl_s if parsed else None) if h]
    return max(hints) if hints else None


class Outcomes:
    """The end of a poll, one method per way it can end; each returns the report and the feed's next state."""

    def __init__(self, policy: Policy, registry: regmod.Registry[Feed], io: Executor, *,
                 forget: Callable[[str], None], relocated: Callable[[Feed], None]) -> None:
        self.policy = policy
        self.registry = registry
        self._io = io
        self._forget = forget
        self._relocated = relocated

    async def _in_io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def not_modified(self, feed: Feed, st: FeedState, result: FetchResult, now: float,
                     flog: Any) -> tuple[PollReport, FeedState]:
        """A 304: the feed is as it was; schedule the next check."""
        metrics.INGEST_FETCHES.labels("304").inc()
        st = self.policy.after_success(st, Observation(hint_s=hint_s(result, None, now)), now, feed.interval_s)
        flog.debug("feed_not_modified", elapsed_s=round(result.elapsed_s, 3))
        return PollReport(feed.id, "304"), st

    def failed(self, st: FeedState, result: FetchResult, now: float, flog: Any) -> tuple[PollReport, FeedState]:
        """A fetch that failed: back off, honouring Retry-After on a 429 or 503."""
        label = result.outcome.value
        metrics.INGEST_FETCHES.labels(label).inc()
        honour = result.retry_after_s if result.status in (429, 503) else None
        st = self.policy.after_error(st, now, honour).with_(last_error=f"{label}: {result.error}"[:500],
                                                            last_error_at=now)
        flog.warning("feed_fetch_failed", outcome=label, status=result.status, error=result.error[:300],
                     errors=st.errors, retry_in_s=round(st.next_due - now, 1))
        return PollReport(st.feed_id, label, error=result.error), st

    async def gone(self, feed: Feed, st: FeedState, result: FetchResult, now: float,
                   flog: Any) -> tuple[PollReport, FeedState]:
        """A 410: disable the feed in the registry and stop polling it."""
        metrics.INGEST_FETCHES.labels("4xx").inc()
        reason = f"410 Gone at {datetime.fromtimestamp(now, UTC):%Y-%m-%dT%H:%M:%SZ} from {result.url}"[:500]
        # compare-and-set on the stored feed: an edit made meanwhile through the API is kept, not overwritten
        await self._in_io(self.registry.update, feed.id,
                          lambda current: current.model_copy(update={"enabled": False, "disabled_reason": reason,
                                                                     "updated_at": datetime.now(UTC)}))
        metrics.INGEST_FEEDS_DISABLED.labels("gone").inc()
        flog.warning("feed_disabled", reason=reason)
        self._forget(feed.id)
        st = st.with_(disabled_reason=reason, last_error=reason, last_error_at=now, last_attempt_at=now, next_due=0.0)
        return PollReport(feed.id, "410", error=reason), st

    async def moved(self, feed: Feed, st: FeedState, target: str, flog: Any) -> FeedState:
        """A permanent redirect to ``target``: move the feed there unless the target is refused."""
        problem = check_url(target)
        if problem:
            flog.warning("feed_move_refused", target=target[:300], reason=problem)
            return st

        def move(current: Feed) -> Feed:  # only a feed still at the URL we fetched; an API edit wins
            if current.url != feed.url:
                return current
            return current.model_copy(update={"url": target, "updated_at": datetime.now(UTC)})

        done = await self._in_io(self.registry.update, feed.id, move)
        if done is not None and done[0].url == target:
            self._relocated(done[0])
        metrics.INGEST_URL_MOVES.inc()
        flog.info("feed_moved", old=feed.url[:300], new=target[:300])
        return st.with_(url=target, identity_url=st.identity_url or feed.url)

    def is_unchanged(self, st: FeedState, digest: str, now: float) -> bool:
        """True when the body is the one read last, and that read is recent enough to skip parsing."""
        return digest == st.body_hash and bool(st.last_success_at) and now - st.read_at < UNCHANGED_REREAD_S

    def unchanged(self, feed: Feed, st: FeedState, result: FetchResult, now: float,
                  flog: Any) -> tuple[PollReport, FeedState]:
        """The same bytes as last time from a server without validators: nothing to parse.

        A full read still happens daily, which refreshes the entries' seen marks long before they expire.
        """
        metrics.INGEST_FETCHES.labels("200").inc()
        st = self.policy.after_success(st, Observation(hint_s=hint_s(result, None, now)), now, feed.interval_s)
        flog.debug("feed_unchanged", elapsed_s=round(result.elapsed_s, 3))
        return PollReport(feed.id, "200", unchanged=True), st.with_(etag=result.etag,
                                                                    last_modified=result.last_modified)

    def parse_failed(self, feed: Feed, st: FeedState, exc: ParseError, now: float,
                     flog: Any) -> tuple[PollReport, FeedState]:
        """A body that is no feed: back off as after a failed fetch."""
        metrics.INGEST_FETCHES.labels("parse_error").inc()
        st = self.policy.after_error(st, now).with_(last_error=f"parse_error: {exc}"[:500], last_error_at=now,
                                                    last_outcome="parse_error")
        flog.warning("feed_parse_failed", error=str(exc)[:300], errors=st.errors)
        return PollReport(feed.id, "parse_error", error=str(exc)), st

    def parsed(self, got: Read, flog: Any) -> None:
        """Count a body read in full, and what its parse had to repair or cut."""
        metrics.INGEST_FETCHES.labels("200").inc()
        if got.parsed.problem:
            metrics.INGEST_PARSE_PROBLEMS.labels(got.parsed.problem).inc()
        if got.parsed.hostile:
            metrics.INGEST_PARSE_PROBLEMS.labels("entity_declarations").inc()
            flog.warning("feed_entities_removed", detail="DOCTYPE with entity declarations cut before parsing")

    def publish_failed(self, feed: Feed, st: FeedState, exc: Exception, items: int, now: float,
                       flog: Any) -> tuple[PollReport, FeedState]:
        """Kafka did not acknowledge: nothing was published (the claims are released); back off."""
        st = self.policy.after_error(st, now).with_(last_error="publish: " + describe_error(exc)[:500],
                                                    last_error_at=now, last_outcome="publish_error")
        flog.error("feed_publish_failed", error=describe_error(exc)[:300], items=items)
        return PollReport(feed.id, "publish_error", error=str(exc)), st

    def published(self, feed: Feed, st: FeedState, result: FetchResult, got: Read, sent: list[Article],
                  digest: str, now: float, flog: Any) -> tuple[PollReport, FeedState]:
        """The entries are out and marked seen: count them and schedule the next check from what was seen."""
        claimed, parsed, invalid = got.claimed, got.parsed, got.invalid
        counts = claimed.counts()
        if st.last_success_at:
            # Publication-to-fetch delay, for entries that are news to us (a feed's first read lists history).
            for a in sent:
                if not a.update and not a.published_estimated:
                    metrics.observe_hop("fetch", now - a.published_at.timestamp())
        for fate, label in ((Fate.NEW, "new"), (Fate.UPDATED, "updated"), (Fate.SEEN, "seen"), (Fate.BUSY, "busy")):
            if counts[fate]:
                metrics.INGEST_ITEMS.labels(label).inc(counts[fate])
        if claimed.stale:
            metrics.INGEST_ITEMS.labels("stale").inc(claimed.stale)
        if invalid:
            metrics.INGEST_ITEMS.labels("invalid").inc(invalid)
        dates = [n.article.published_at.timestamp() for n in claimed.items if not n.article.published_estimated]
        obs = Observation(new=counts[Fate.NEW], entries=len(claimed.items),
                          dated_span_s=(max(dates) - min(dates)) if len(dates) >= 2 else None, dated=len(dates),
                          hint_s=hint_s(result, parsed, now))
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
                  seen=counts[Fate.SEEN], busy=counts[Fate.BUSY], stale=claimed.stale, invalid=invalid,
                  problem=parsed.problem, elapsed_s=round(result.elapsed_s, 3),
                  next_in_s=round(st.next_due - now, 1))
        return PollReport(feed.id, "200", counts[Fate.NEW], counts[Fate.UPDATED], counts[Fate.SEEN],
                          counts[Fate.BUSY], claimed.stale, invalid), st

