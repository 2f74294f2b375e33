"""Thin feeds through the real ingest worker, Kafka and Redis: pages read once, held briefly or followed up.

The site (bench.fulltext.site) serves headline-only feeds and their article pages on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from alerts.rules import Action, judge
from alerts.stories import StoryFolder
from bench.fulltext.site import Route, Site, article_page, standard_routes
from ingest.worker import IngestWorker
from tests.integration.alerts_support import webhook_sub
from wirewatch import registry as regmod
from wirewatch import state as wstate
from wirewatch.identity import feed_id
from wirewatch.records import Article, Feed, Match, ModelInfo, decode
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
INGEST = {"min_interval_s": 1, "max_interval_s": 5, "default_interval_s": 2, "jitter": 0, "metrics_port": None,
          "fetch_timeout_s": 5, "full_text": "auto", "full_text_timeout_s": 5, "full_text_wait_s": 2.0}
BODY = ("Officials confirmed on Monday that the harbour bridge will close for repairs after engineers found deep "
        "cracks in its piers. ") * 8


@pytest.fixture
def site() -> Iterator[Site]:
    with Site(standard_routes()) as s:
        yield s


@pytest.fixture
def fsettings(make_settings: Callable[..., Settings]) -> Settings:
    from wirewatch import bus

    s = make_settings(ingest=INGEST, api={"url_allowlist": ["127.0.0.1"]})
    bus.ensure_default_topics(s)
    return s


def rss(links: list[tuple[str, str]]) -> bytes:
    items = "".join(f"<item><title>{t}</title><link>{u}</link><guid>{u}</guid></item>" for t, u in links)
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Thin</title>{items}</channel></rss>'.encode()


def consume(settings: Settings, expect: int, timeout_s: float = 20.0) -> list[Article]:
    c = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    topic = settings.kafka.topics.articles
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    out: list[Article] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(out) < expect:
            for recs in c.poll(timeout_ms=300).values():
                out.extend(decode(Article, r.value) for r in recs)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # nothing more should come
            for recs in c.poll(timeout_ms=200).values():
                out.extend(decode(Article, r.value) for r in recs)
    finally:
        c.close()
    return out


def run_polls(settings: Settings, feeds: list[Feed], linger_s: float = 0.0) -> list[Any]:
    async def go() -> list[Any]:
        reg = regmod.feeds(wstate.connect(settings), settings)
        for f in feeds:
            reg.put(f)
        w = IngestWorker(settings)
        await w.startup()
        try:
            reports = [await w.poll(w.feeds[f.id]) for f in feeds]
            await asyncio.sleep(linger_s)
            return reports
        finally:
            await w.close()
    return asyncio.run(go())


def test_thin_feeds_get_page_text_each_page_read_once_failures_keep_the_feed_text(
        fsettings: Settings, site: Site) -> None:
    ok, paywall, pdf = site.url("/news/ok"), site.url("/news/paywall"), site.url("/news/pdf")
    site.routes["/feed-a"] = Route(body=rss([("Bridge to close", ok), ("Paywalled", paywall), ("A PDF", pdf)]),
                                   headers={"Content-Type": "application/rss+xml"})
    site.routes["/feed-b"] = Route(body=rss([("Harbour bridge shut", ok)]),
                                   headers={"Content-Type": "application/rss+xml"})
    fa = Feed(id=feed_id(site.url("/feed-a")), url=site.url("/feed-a"))
    fb = Feed(id=feed_id(site.url("/feed-b")), url=site.url("/feed-b"), full_text="always")
    ra, rb = run_polls(fsettings, [fa, fb])
    assert (ra.new, rb.new, rb.updated) == (3, 0, 1)  # feed b carries the same link under another title
    msgs = consume(fsettings, 4)
    assert len(msgs) == 4
    got = {a.url: a for a in msgs if not a.update}
    retitled = next(a for a in msgs if a.update)
    assert got[ok].content and "supporting piers" in got[ok].content
    assert retitled.id == got[ok].id and retitled.content == got[ok].content  # from the page cache, not re-read
    assert got[paywall].content is None and got[pdf].content is None  # outcomes, not crashes: feed text goes on
    assert site.hits["/news/ok"] == 1 and site.hits["/robots.txt"] == 1
    ua = next(r for r in site.requests if r["path"] == "/news/ok")["User-Agent"]
    assert ua == fsettings.ingest.user_agent


def test_a_page_slower_than_the_wait_follows_as_an_update_and_alerts_fold_it_into_the_sent_story(
        fsettings: Settings, site: Site) -> None:
    site.routes["/news/late"] = Route(body=article_page("Bridge to close", BODY), delay_s=3.0)
    late = site.url("/news/late")
    site.routes["/feed"] = Route(body=rss([("Bridge to close", late)]), headers={"Content-Type": "application/rss+xml"})
    feed = Feed(id=feed_id(site.url("/feed")), url=site.url("/feed"))
    started = time.monotonic()
    (report,) = run_polls(fsettings, [feed], linger_s=0.0)  # close() waits for the follow-up
    assert report.new == 1 and time.monotonic() - started < 15
    first, second = consume(fsettings, 2)
    assert first.id == second.id and first.content is None and not first.update
    assert second.update and second.content and "cracks in its piers" in second.content

    # Both versions reach alerts as matches on one topic: the update is the same article, so it folds into the
    # story already alerted and the rules suppress it: one notification for the story.
    folder = StoryFolder(wstate.connect(fsettings), fsettings)
    m1, m2 = (Match(article=a, topic_id="infra", score=0.8, threshold=0.5, model=ModelInfo(name="t"))
              for a in (first, second))
    (f1,) = folder.fold([m1])
    (f2,) = folder.fold([m2])
    assert f1.new_story and f2.replay and f2.story.id == f1.story.id
    sub = webhook_sub("s1", "http://127.0.0.1:9/hook", topic="infra")
    now = datetime.now(UTC)
    assert judge(sub, f1, known=False, now=now).action is Action.SEND
    assert judge(sub, f2, known=True, now=now).action is Action.SUPPRESS
