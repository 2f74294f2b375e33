"""Full-text pages in a poll: held briefly before the produce, published later as updates when they come late.

Fetching a page (robots.txt, Crawl-delay, the shared cache, extraction) is :class:`ingest.fulltext.FullText`;
this is what one poll does with it (docs/fulltext.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from ingest.fulltext import FullText, Page, wanted, with_page
from ingest.hosts import HostSlots
from ingest.sink import Sink
from wirewatch import metrics
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Article, Feed
from wirewatch.settings import IngestSettings

log = get_logger("ingest")
Late = tuple[Article, "asyncio.Task[Page]"]
"""An article as published, and the task that will bring its page."""


def host_of(feed: Feed) -> str:
    """The host a feed's polls count against (per-host politeness)."""
    return (urlsplit(feed.url).hostname or "").lower()


class PageHold:
    """Holds a poll's thin articles for their pages; follows up with the pages that come too late."""

    def __init__(self, cfg: IngestSettings, fulltext: FullText, hosts: HostSlots, sink: Sink) -> None:
        self.cfg = cfg
        self.fulltext = fulltext
        self.hosts = hosts
        self.sink = sink
        self._followups: set[asyncio.Task[None]] = set()

    async def hold(self, feed: Feed, send: list[Article]) -> tuple[list[Article], list[Late]]:
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
            async with self.hosts.lend(host_of(feed)):  # the feed's own request is over: pages may use its slot
                await asyncio.wait(tasks.values(), timeout=self.cfg.full_text_wait_s)
        metrics.INGEST_FULLTEXT_HELD_SECONDS.observe(time.monotonic() - started)
        out, later = list(send), []
        for i, task in tasks.items():
            if task.done():
                out[i] = with_page(out[i], task.result())
            else:
                later.append((out[i], task))
        return out, later

    def follow_up(self, later: list[Late]) -> None:
        """Publish each of ``later`` once more, as an update with its page text, when its page arrives usable."""
        for article, task in later:
            self._spawn(self._publish_late(article, task))

    async def _publish_late(self, article: Article, task: asyncio.Task[Page]) -> None:
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._followups.add(task)
        task.add_done_callback(self._followups.discard)

    async def drain(self) -> None:
        """Give the follow-ups still on their way the page fetch deadline, then cancel what is left."""
        if self._followups:
            # Their articles are out already; waiting longer would only hold up the stop.
            await asyncio.wait(list(self._followups), timeout=self.cfg.full_text_timeout_s + 1)
            for t in list(self._followups):
                t.cancel()
