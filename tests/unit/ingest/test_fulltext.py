"""Full text of thin feeds: extraction, and every page outcome against a local site on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.fulltext.site import Route, Site, article_page, standard_routes
from ingest.extract import extract
from ingest.fetcher import HttpFetcher
from ingest.fulltext import FullText, MemoryPageCache, Page, wanted, with_page
from ingest.hosts import HostSlots
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


def count(outcome: str) -> float:
    return metrics.INGEST_FULLTEXT.labels(outcome)._value.get()  # type: ignore[attr-defined, no-any-return]


async def pages(c: IngestSettings, articles: list[Article], cache: MemoryPageCache | None = None,
                revalidate: bool = False) -> list[Page]:
    fetcher = HttpFetcher(c, allow=["127.0.0.1"])
    ft = FullText(c, fetcher, cache or MemoryPageCache(), slot=HostSlots(c.per_host_concurrency).slot)
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
def test_each_page_ends_in_its_outcome_counted_never_raised(site: Site, path: str, outcome: str) -> None:
    before = count(outcome)
    (page,) = asyncio.run(pages(cfg(), [art(site.url(path))]))
    assert page.outcome == outcome
    assert page.usable == (outcome == "ok")
    assert (len(page.text) > 500) == (outcome == "ok")
    assert count(outcome) == before + 1
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


def test_revalidation_is_a_conditional_get_and_a_304_keeps_the_text(site: Site) -> None:
    cache = MemoryPageCache()
    a = art(site.url("/news/etag"))
    (first,) = asyncio.run(pages(cfg(), [a], cache))
    (second,) = asyncio.run(pages(cfg(), [a], cache, revalidate=True))
    assert first.outcome == "ok" and second.outcome == "not_modified" and second.text == first.text
    last = [r for r in site.requests if r["path"] == "/news/etag"][-1]
    assert last["If-None-Match"] == '"p1"'


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
