"""Full text of thin feeds: extraction, and every page outcome against a local site on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from bench.fulltext.site import ARTICLE_TEXT, Route, Site, article_page, standard_routes
from ingest.extract import extract, headlines, without_headline
from ingest.fetcher import HttpFetcher
from ingest.fulltext import FullText, MemoryPageCache, Page, after_title, wanted, with_page
from ingest.hosts import HostSlots, Pacer
from wirewatch import metrics
from wirewatch.identity import article_id
from wirewatch.records import Article, Feed
from wirewatch.settings import IngestSettings

pytestmark = pytest.mark.timeout(60)
NOW = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def site() -> Iterator[Site]:
    with Site(standard_routes()) as s:
        yield s


def cfg(**kw: Any) -> IngestSettings:
    base = {"full_text_timeout_s": 2.0, "full_text_max_bytes": 300_000, "full_text_min_chars": 250,
            "per_host_concurrency": 2}
    return IngestSettings(**(base | kw))


def art(url: str, summary: str = "", feed: str = "f1") -> Article:
    return Article(id=article_id(url=url, feed_url="http://feed", guid=None, title="t", published=None), url=url,
                   title="Bridge", summary=summary, published_at=NOW, fetched_at=NOW, feed_url="http://feed",
                   feed_id=feed)


@contextmanager
def info_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Capture log events from INFO up (the test session logs WARNING and up only)."""
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**old)


def count(outcome: str) -> float:
    return metrics.INGEST_FULLTEXT.labels(outcome)._value.get()  # type: ignore[attr-defined, no-any-return]


async def pages(c: IngestSettings, articles: list[Article], cache: MemoryPageCache | None = None,
                revalidate: bool = False, slots: HostSlots | None = None) -> list[Page]:
    fetcher = HttpFetcher(c, allow=["127.0.0.1"])
    ft = FullText(c, fetcher, cache or MemoryPageCache(), slot=(slots or HostSlots(c.per_host_concurrency)).slot)
    try:
        return list(await asyncio.gather(*(ft.page(a, revalidate=revalidate) for a in articles)))
    finally:
        await ft.aclose()


@pytest.mark.parametrize(("path", "outcome"), [
    ("/news/ok", "ok"), ("/news/paywall", "paywall"), ("/news/cookie", "cookie_wall"),
    ("/news/consent", "consent"), ("/news/huge", "too_large"), ("/news/slow", "timeout"),
    ("/news/pdf", "not_html"), ("/news/private", "blocked"), ("/news/empty", "empty"),
    ("/private/secret", "robots_disallowed"), ("/news/missing", "http_error"),
])
def test_each_page_ends_in_its_outcome_counted_logged_never_raised(site: Site, path: str, outcome: str) -> None:
    before = count(outcome)
    a = art(site.url(path), feed="feed-7")
    with info_logs() as logs:
        (page,) = asyncio.run(pages(cfg(), [a]))
    assert page.outcome == outcome
    assert page.usable == (outcome == "ok")
    assert (len(page.text) > 500) == (outcome == "ok")
    assert count(outcome) == before + 1
    unusable = [e for e in logs if e["event"] == "fulltext_unusable"]
    if outcome == "ok":
        assert unusable == []
    else:  # one line per page, naming the feed and the article
        assert [(e["feed_id"], e["article_id"], e["outcome"]) for e in unusable] == [("feed-7", a.id, outcome)]
    # whatever became of the page, the article keeps the feed's text and gains content only from a real page
    kept = with_page(a, page)
    assert kept.summary == a.summary and (kept.content is not None) == (outcome == "ok")
    if outcome == "ok":
        assert "cracks in two of its supporting piers" in page.text and "Related story" not in page.text
        req = next(r for r in site.requests if r["path"] == path)
        assert req["User-Agent"].startswith("Wirewatch/") and req["Accept"].startswith("text/html")


def test_a_page_carried_by_many_feeds_is_fetched_once_and_robots_once_per_host(site: Site) -> None:
    cache = MemoryPageCache()
    url = site.url("/news/ok")
    got = asyncio.run(pages(cfg(), [art(url, feed="f1"), art(url + "?utm_source=x", feed="f2"), art(url, feed="f3")],
                            cache))
    # one identity for every spelling of the URL (tracking parameters dropped), so one fetch
    assert all(p.usable for p in got) and len({art(url).id, art(url + "?utm_source=x").id}) == 1
    assert site.hits["/news/ok"] == 1 and site.hits["/robots.txt"] == 1
    again = asyncio.run(pages(cfg(), [art(url, feed="f4")], cache))
    assert again[0].outcome == "cached" and site.hits["/news/ok"] == 1


@pytest.mark.parametrize(("path", "header", "value"), [
    ("/news/etag", "If-None-Match", '"p1"'), ("/news/dated", "If-Modified-Since", "Tue, 30 Apr 2024 08:00:00 GMT")])
def test_revalidation_is_a_conditional_get_and_a_304_keeps_the_text(site: Site, path: str, header: str,
                                                                     value: str) -> None:
    cache = MemoryPageCache()
    a = art(site.url(path))
    (first,) = asyncio.run(pages(cfg(), [a], cache))
    (second,) = asyncio.run(pages(cfg(), [a], cache, revalidate=True))
    assert first.outcome == "ok" and second.outcome == "not_modified" and second.text == first.text
    first_req, last = [r for r in site.requests if r["path"] == path]
    assert header not in first_req and last[header] == value


def test_a_page_without_validators_is_not_fetched_again_on_revalidation(site: Site) -> None:
    cache = MemoryPageCache()
    a = art(site.url("/news/ok"))
    asyncio.run(pages(cfg(), [a], cache))
    (again,) = asyncio.run(pages(cfg(), [a], cache, revalidate=True))
    assert again.outcome == "cached" and site.hits["/news/ok"] == 1


@pytest.mark.parametrize(("status", "outcome"), [(404, "ok"), (410, "ok"), (503, "robots_unreachable"),
                                                 (429, "robots_unreachable")])
def test_robots_txt_unavailable_allows_unreachable_disallows(site: Site, status: int, outcome: str) -> None:
    site.routes["/robots.txt"] = Route(status, b"", {"Content-Type": "text/plain"})
    (page,) = asyncio.run(pages(cfg(), [art(site.url("/news/ok"))]))
    assert page.outcome == outcome
    assert site.hits.get("/news/ok", 0) == (1 if outcome == "ok" else 0)


def test_pages_of_one_host_never_exceed_the_per_host_limit(site: Site) -> None:
    for i in range(8):
        site.routes[f"/news/s{i}"] = Route(body=article_page(f"Story {i}", "Text. " * 200), delay_s=0.2)
    got = asyncio.run(pages(cfg(per_host_concurrency=2), [art(site.url(f"/news/s{i}")) for i in range(8)]))
    assert all(p.outcome == "ok" for p in got)
    assert site.max_inflight <= 2


def test_wanted_follows_the_feed_mode_then_the_default() -> None:
    short, long = art("https://n.example/a", "teaser"), art("https://n.example/b", "x" * 300)
    feed = Feed(id="f", url="https://n.example/rss")
    c = cfg(full_text="auto", full_text_min_summary_chars=200)
    assert wanted(feed, short, c) and not wanted(feed, long, c)
    assert wanted(feed.model_copy(update={"full_text": "always"}), long, c)
    assert not wanted(feed.model_copy(update={"full_text": "never"}), short, c)
    assert not wanted(feed, short, cfg())  # ingest default: never
    assert not wanted(feed.model_copy(update={"full_text": "always"}), short.model_copy(update={"url": None}), c)


def test_extraction_keeps_an_article_that_mentions_cookies_and_subscriptions() -> None:
    text = ("We use cookies, the bakery owner joked, as she explained why subscribers to her bread club had doubled. "
            * 6)
    got = extract(article_page("Bakery", text), {"Content-Type": "text/html"}, "https://n.example/bakery",
                  min_chars=250, max_chars=4000)
    assert got.outcome == "ok" and "bread club" in got.text


def test_with_page_sets_content_only_when_usable() -> None:
    a = art("https://n.example/a")
    assert with_page(a, Page("paywall")) is a
    assert with_page(a, Page("ok", "body text"), update=True).model_dump()["content"] == "body text"
    assert with_page(a, Page("ok", "body text"), update=True).update


def crawl_site(site: Site, robots: str, n: int) -> list[Article]:
    site.routes["/robots.txt"] = Route(body=robots.encode(), headers={"Content-Type": "text/plain"})
    for i in range(n):
        site.routes[f"/news/c{i}"] = Route(body=article_page(f"Story {i}", ARTICLE_TEXT))
    return [art(site.url(f"/news/c{i}")) for i in range(n)]


def test_crawl_delay_spaces_the_page_fetches_of_a_host(site: Site) -> None:
    articles = crawl_site(site, "User-agent: *\nCrawl-delay: 0.6\n", 3)  # read as 1 s: whole seconds, rounded up
    got = asyncio.run(pages(cfg(per_host_concurrency=4), articles))
    assert [p.outcome for p in got] == ["ok"] * 3
    starts = sorted(t for path, t in site.started if path.startswith("/news/c"))
    assert len(starts) == 3 and all(b - a >= 0.95 for a, b in zip(starts, starts[1:], strict=False))
    assert site.hits["/robots.txt"] == 1  # the delay is cached with the rules


def test_crawl_delay_of_our_own_group_wins_and_a_turn_too_far_away_is_an_outcome_not_a_wait(site: Site) -> None:
    articles = crawl_site(site, "User-agent: *\nCrawl-delay: 0\n\nUser-agent: wirewatch\nCrawl-delay: 100\n", 2)
    before = count("crawl_delay")
    started = time.monotonic()
    got = asyncio.run(pages(cfg(), articles))
    assert sorted(p.outcome for p in got) == ["crawl_delay", "ok"] and time.monotonic() - started < 5
    assert count("crawl_delay") == before + 1
    assert sum(site.hits.get(f"/news/c{i}", 0) for i in range(2)) == 1


def test_a_page_refused_for_crawl_delay_is_neither_cached_nor_left_claimed(site: Site) -> None:
    (a,) = crawl_site(site, "User-agent: *\nCrawl-delay: 100\n", 1)

    async def go() -> list[str]:
        c = cfg()
        ft = FullText(c, HttpFetcher(c, allow=["127.0.0.1"]), cache, slot=HostSlots(2).slot)
        try:
            other = art(site.url("/news/ok"))
            return [(await ft.page(x)).outcome for x in (other, a, a)]
        finally:
            await ft.aclose()

    cache = MemoryPageCache()
    started = time.monotonic()
    assert asyncio.run(go()) == ["ok", "crawl_delay", "crawl_delay"]  # asked again: refused again, not "busy"
    assert time.monotonic() - started < 3 and cache.get(a.id) is None and cache.claim(a.id, 5)


def test_pacer_turns_are_delay_apart_and_refused_past_the_queue_bound() -> None:
    p = Pacer(max_wait_s=25)
    waits = [p.turn("h", 10) for _ in range(4)]
    assert waits[0] == 0.0 and waits[1] == pytest.approx(10, abs=0.1) and waits[2] == pytest.approx(20, abs=0.1)
    assert waits[3] is None  # 30 s away: refused, and nothing reserved
    assert p.turn("other", 10) == 0.0 and p.turn("h", 0) == 0.0


def test_robots_txt_and_pages_wait_for_a_host_slot_held_by_a_feed_poll(site: Site) -> None:
    async def go() -> tuple[dict[str, int], Page]:
        slots = HostSlots(1)
        assert slots.try_take("127.0.0.1")  # a feed poll of the same host is in flight
        task = asyncio.ensure_future(pages(cfg(per_host_concurrency=1), [art(site.url("/news/ok"))], slots=slots))
        await asyncio.sleep(0.5)
        during = dict(site.hits)
        slots.release("127.0.0.1")
        (page,) = await asyncio.wait_for(task, 10)
        return during, page

    during, page = asyncio.run(go())
    assert during == {} and page.outcome == "ok"  # not even robots.txt went out beside the feed's request


def test_a_lent_slot_lets_a_page_through_and_is_taken_back() -> None:
    async def go() -> list[str]:
        slots, order = HostSlots(1), []
        assert slots.try_take("h")

        async def page() -> None:
            async with slots.slot("h"):
                order.append(f"page:{slots.active['h']}")

        task = asyncio.ensure_future(page())
        await asyncio.sleep(0.05)
        order.append(f"waiting:{task.done()}")
        async with slots.lend("h"):
            await asyncio.wait_for(task, 2)
        order.append(f"after:{slots.active.get('h')}")
        slots.release("h")
        order.append(f"released:{slots.active.get('h')}")
        async with slots.lend("nobody"):  # nothing held: nothing lent
            order.append(f"no-lend:{slots.active.get('nobody')}")
        return order

    assert asyncio.run(go()) == ["waiting:False", "page:1", "after:1", "released:None", "no-lend:None"]


def test_the_title_is_embedded_once() -> None:
    title = "Harbour bridge to close for six months"
    body = article_page(title, ARTICLE_TEXT)
    assert "harbour bridge to close for six months" in headlines(body)
    got = extract(body, {"Content-Type": "text/html"}, "https://n.example/a", min_chars=250, max_chars=4000)
    assert got.outcome == "ok" and got.text.startswith("The city council voted")
    a = art("https://n.example/a").model_copy(update={"title": title})
    assert with_page(a, Page(got.outcome, got.text)).text().count(title) == 1
    # a feed's own title leading the text (a page without a headline element) is cut per article
    assert after_title(f"{title}: The city council voted", title) == "The city council voted"
    assert after_title("Bridge", "Bridge") == "Bridge"  # nothing left: keep what there is
    # a first line that is not the headline stays; a <title> with the site's name still counts
    assert without_headline("Officials said\nmore", ["harbour bridge"]) == "Officials said\nmore"
    assert without_headline("Harbour bridge to close\nText", ["harbour bridge to close local news"]) == "Text"
