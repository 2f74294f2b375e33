"""Thin feeds through the real ingest worker, Kafka and Redis: pages read once, held briefly or followed up.

The site (bench.fulltext.site) serves headline-only feeds and their article pages on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import api_support
import pytest
from api_support import Api
from kafka import KafkaConsumer, TopicPartition

from alerts.rules import Action, judge
from alerts.stories import StoryFolder
from bench.fulltext.site import Route, Site, article_page, standard_routes
from ingest.fetcher import HttpFetcher
from ingest.fulltext import FullText, RedisPageCache
from ingest.hosts import HostSlots
from ingest.worker import IngestWorker, config_feeds
from tests.integration.alerts_support import webhook_sub
from tests.unit.ingest.test_fulltext import art, count, info_logs
from wirewatch import registry as regmod
from wirewatch import state as wstate
from wirewatch.auth import COOKIE
from wirewatch.identity import feed_id
from wirewatch.records import Article, Feed, Match, ModelInfo, decode
from wirewatch.settings import Settings, load_settings

api, api_settings = api_support.api, api_support.api_settings

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


def rss(links: list[tuple[str, str]], summaries: dict[str, str] | None = None) -> bytes:
    said = summaries or {}
    items = "".join(f"<item><title>{t}</title><link>{u}</link><guid>{u}</guid>"
                    f"{f'<description>{said[u]}</description>' if u in said else ''}</item>" for t, u in links)
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
    content = got[ok].content
    assert content and "supporting piers" in content
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


FAILURES = {"/news/paywall": "paywall", "/news/cookie": "cookie_wall", "/news/consent": "consent",
            "/news/huge": "too_large", "/news/slow": "timeout", "/news/pdf": "not_html",
            "/news/private": "blocked", "/news/empty": "empty"}


def test_every_failure_outcome_is_counted_logged_with_ids_and_the_article_goes_on_with_the_feed_text(
        make_settings: Callable[..., Settings], site: Site) -> None:
    from wirewatch import bus

    # the slow page (3 s) outlasts its 1.5 s deadline, inside the 2.5 s hold: every outcome is known in time
    s = make_settings(ingest=INGEST | {"full_text": "always", "full_text_timeout_s": 1.5, "full_text_wait_s": 2.5},
                      api={"url_allowlist": ["127.0.0.1"]})
    bus.ensure_default_topics(s)
    links = [(f"Story {path}", site.url(path)) for path in FAILURES]
    teasers = {u: f"Teaser of {t}" for t, u in links}
    site.routes["/feed"] = Route(body=rss(links, teasers), headers={"Content-Type": "application/rss+xml"})
    feed = Feed(id=feed_id(site.url("/feed")), url=site.url("/feed"))
    before = {o: count(o) for o in FAILURES.values()}
    with info_logs() as logs:
        (report,) = run_polls(s, [feed])
    assert report.outcome == "200" and report.new == len(FAILURES)
    msgs = consume(s, len(FAILURES))
    assert len(msgs) == len(FAILURES) and not any(a.update for a in msgs)  # once each: nothing to follow up
    for a in msgs:
        assert a.content is None and a.summary == teasers[a.url or ""] and a.title.startswith("Story ")
    by_url = {a.url: a for a in msgs}
    unusable = {e["article_id"]: e for e in logs if e["event"] == "fulltext_unusable"}
    for path, outcome in FAILURES.items():
        a = by_url[site.url(path)]
        assert unusable[a.id]["feed_id"] == feed.id and unusable[a.id]["outcome"] == outcome, path
        assert count(outcome) == before[outcome] + 1, outcome
    assert site.hits.get("/internal", 0) == 0  # the private address was never asked


def test_a_poll_lends_its_host_slot_so_a_page_on_the_feed_host_arrives_within_the_hold(
        make_settings: Callable[..., Settings], site: Site) -> None:
    from wirewatch import bus

    # One request at a time to 127.0.0.1: the feed's poll holds that slot while it waits for the page.
    s = make_settings(ingest=INGEST | {"per_host_concurrency": 1}, api={"url_allowlist": ["127.0.0.1"]})
    bus.ensure_default_topics(s)
    ok = site.url("/news/ok")
    site.routes["/feed"] = Route(body=rss([("Bridge to close", ok)]), headers={"Content-Type": "application/rss+xml"})
    feed = Feed(id=feed_id(site.url("/feed")), url=site.url("/feed"))

    async def go() -> None:
        regmod.feeds(wstate.connect(s), s).put(feed)
        w = IngestWorker(s)
        await w.startup()
        try:
            w._start(feed.id)  # the run loop's own path: take the host slot, then poll
            await asyncio.wait_for(w._inflight[feed.id], 15)
            assert w.hosts.active == {}  # and every slot back
        finally:
            await w.close()

    started = time.monotonic()
    asyncio.run(go())
    (only,) = consume(s, 1)
    assert only.content and "supporting piers" in only.content and not only.update
    assert time.monotonic() - started < 10 and site.max_inflight == 1


def test_an_updated_entry_revalidates_its_page_with_a_conditional_get(fsettings: Settings, site: Site) -> None:
    page = site.url("/news/etag")
    site.routes["/feed"] = Route(body=rss([("Bridge to close", page)]), headers={"Content-Type": "application/rss+xml"})
    feed = Feed(id=feed_id(site.url("/feed")), url=site.url("/feed"))
    run_polls(fsettings, [feed])
    site.routes["/feed"] = Route(body=rss([("Bridge to close in May", page)]),
                                 headers={"Content-Type": "application/rss+xml"})
    before = count("not_modified")
    run_polls(fsettings, [feed])
    first, second = consume(fsettings, 2)
    assert second.update and second.content == first.content and first.content
    asks = [r for r in site.requests if r["path"] == "/news/etag"]
    assert len(asks) == 2 and "If-None-Match" not in asks[0] and asks[1]["If-None-Match"] == '"p1"'
    assert count("not_modified") == before + 1


def test_the_setting_is_read_from_the_toml_and_shown_by_the_api_and_the_dashboard(api: Api, tmp_path: Path) -> None:
    toml = tmp_path / "wirewatch.toml"
    toml.write_text('[ingest]\nfull_text = "never"\nfull_text_min_summary_chars = 120\n\n'
                    '[[ingest.feeds]]\nurl = "https://thin.example/rss"\nfull_text = "always"\n\n'
                    '[[ingest.feeds]]\nurl = "https://full.example/rss"\n', encoding="utf-8")
    from_file = load_settings(toml)
    assert from_file.ingest.full_text == "never" and from_file.ingest.full_text_min_summary_chars == 120
    thin, full = config_feeds(from_file.ingest.feeds)
    assert (thin.full_text, full.full_text) == ("always", None)
    (tmp_path / "bad.toml").write_text('[[ingest.feeds]]\nurl = "https://x.example/rss"\nfull_text = "sometimes"\n')
    with pytest.raises(Exception, match="full_text"):
        load_settings(tmp_path / "bad.toml")

    c = api.client
    assert c is not None
    regmod.feeds(wstate.connect(api.settings), api.settings).seed([thin, full])
    h = api.h(api.admin)
    assert c.get(f"/v1/feeds/{thin.id}", headers=h).json()["full_text"] == "always"
    assert c.get(f"/v1/feeds/{full.id}", headers=h).json()["full_text"] is None
    made = c.post("/v1/feeds", json={"url": "https://auto.example/rss", "full_text": "auto"}, headers=h)
    assert made.status_code == 201 and made.json()["full_text"] == "auto"
    assert c.post("/v1/feeds", json={"url": "https://b.example/rss", "full_text": "sometimes"},
                  headers=h).status_code == 422
    assert c.patch(f"/v1/feeds/{thin.id}", json={"full_text": "never"}, headers=h).json()["full_text"] == "never"
    assert c.patch(f"/v1/feeds/{full.id}", json={"name": "Full"}, headers=h).json()["full_text"] is None
    assert c.get(f"/v1/feeds/{thin.id}/health", headers=h).json()["full_text"] == "never"
    unset = c.get(f"/v1/feeds/{full.id}/health", headers=h).json()
    assert unset["full_text"] is None and unset["full_text_default"] == api.settings.ingest.full_text == "never"
    assert {r["id"]: r["full_text_default"] for r in c.get("/v1/feeds/health", headers=h).json()}[full.id] == "never"
    stored = regmod.feeds(wstate.connect(api.settings), api.settings).get(thin.id)
    assert stored is not None and stored.full_text == "never"  # what the workers read

    c.cookies.set(COOKIE, api.admin)
    page = c.get("/ui/feeds")
    assert page.status_code == 200
    cells = {fid: page.text.split(f'<tr data-feed="{fid}">')[1].split("</tr>")[0] for fid in
             (thin.id, full.id, made.json()["id"])}
    assert "<th scope=\"col\">Full text</th>" in page.text
    assert "<td>never</td>" in cells[thin.id] and "<td>default</td>" in cells[full.id]
    assert "<td>auto</td>" in cells[made.json()["id"]]


def test_two_workers_asking_for_one_page_at_once_fetch_it_once(fsettings: Settings, site: Site) -> None:
    site.routes["/news/shared"] = Route(body=article_page("Bridge to close", BODY), delay_s=0.5)
    a = art(site.url("/news/shared"))

    async def go() -> list[str]:
        workers = [FullText(fsettings.ingest, HttpFetcher(fsettings.ingest, allow=["127.0.0.1"]),
                            RedisPageCache(wstate.connect(fsettings), fsettings), slot=HostSlots(2).slot)
                   for _ in range(2)]  # two processes' worth: no shared memory, one Redis
        try:
            got = await asyncio.gather(*(w.page(a) for w in workers))
            return sorted(p.outcome for p in got if p.usable)
        finally:
            for w in workers:
                await w.aclose()

    assert asyncio.run(go()) == ["cached", "ok"]
    assert site.hits["/news/shared"] == 1


def test_crawl_delay_turns_are_shared_by_every_worker_through_redis(fsettings: Settings, site: Site) -> None:
    site.routes["/robots.txt"] = Route(body=b"User-agent: *\nCrawl-delay: 1\n", headers={"Content-Type": "text/plain"})
    for i in range(3):
        site.routes[f"/news/d{i}"] = Route(body=article_page(f"Story {i}", BODY))

    async def go() -> list[str]:
        workers = [FullText(fsettings.ingest, HttpFetcher(fsettings.ingest, allow=["127.0.0.1"]),
                            RedisPageCache(wstate.connect(fsettings), fsettings), slot=HostSlots(4).slot)
                   for _ in range(2)]
        try:  # worker 0 reads two of the pages, worker 1 the third, all at once
            asks = [workers[i % 2].page(art(site.url(f"/news/d{i}"))) for i in range(3)]
            return [p.outcome for p in await asyncio.gather(*asks)]
        finally:
            for w in workers:
                await w.aclose()

    assert asyncio.run(go()) == ["ok"] * 3
    starts = sorted(t for path, t in site.started if path.startswith("/news/d"))
    assert len(starts) == 3 and all(b - a >= 0.95 for a, b in zip(starts, starts[1:], strict=False))
    cache = RedisPageCache(wstate.connect(fsettings), fsettings)
    waits = [cache.turn("slow.example", 10, 25) for _ in range(4)]
    assert waits[0] == 0.0 and waits[1] == pytest.approx(10, abs=0.2) and waits[2] == pytest.approx(20, abs=0.2)
    assert waits[3] is None and cache.turn("other.example", 10, 25) == 0.0  # refused, nothing reserved
