"""The ingest worker against a real HTTP server, the real Kafka broker and the real redis-server.

Each test has its own Kafka topics and Redis prefix (see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from ingest_server import Conditional, FeedServer, redirect, rss, static
from kafka import KafkaConsumer, TopicPartition

from ingest.dedup import SeenStore
from ingest.normalize import content_hash
from ingest.sink import ListSink
from ingest.state import StateStore
from ingest.worker import IngestWorker
from wirewatch import registry as regmod
from wirewatch import state as wstate
from wirewatch.identity import article_id, feed_id
from wirewatch.records import Article, Feed, decode
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration

INGEST = {"min_interval_s": 1, "max_interval_s": 5, "default_interval_s": 2, "jitter": 0, "max_backoff_s": 30,
          "claim_lease_s": 3, "metrics_port": None, "fetch_timeout_s": 5}

API = {"url_allowlist": ["127.0.0.1"]}  # the test feed server is on loopback, which the SSRF guard refuses


@pytest.fixture
def isettings(make_settings: Callable[..., Settings]) -> Settings:
    from wirewatch import bus

    s = make_settings(ingest=INGEST, api=API)
    bus.ensure_default_topics(s)
    return s


class Collector:
    """Reads the articles topic from the beginning with one consumer, accumulating what it saw."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                      auto_offset_reset="earliest")
        topic = settings.kafka.topics.articles
        parts = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.messages: list[tuple[str, Article, dict[str, bytes]]] = []

    def poll(self, timeout_ms: int = 300) -> list[tuple[str, Article, dict[str, bytes]]]:
        for recs in self.consumer.poll(timeout_ms=timeout_ms).values():
            for r in recs:
                self.messages.append((r.key.decode(), decode(Article, r.value), dict(r.headers or [])))
        return self.messages

    def keys(self) -> set[str]:
        return {k for k, _, _ in self.poll()}

    def close(self) -> None:
        self.consumer.close()


Message = tuple[str, Article, dict[str, bytes]]


def consume(settings: Settings, expect: int, timeout_s: float = 20.0, settle_s: float = 1.0) -> list[Message]:
    """Every message on the articles topic (waits for at least ``expect``, then ``settle_s`` for extras)."""
    c = Collector(settings)
    try:
        deadline = time.monotonic() + timeout_s
        settle_until = None
        while time.monotonic() < deadline:
            if len(c.poll()) >= expect:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return c.messages
    finally:
        c.close()


def add_feed(settings: Settings, url: str, **kw: Any) -> Feed:
    feed = Feed(id=feed_id(url), url=url, **kw)
    regmod.feeds(wstate.connect(settings), settings).put(feed)
    return feed


async def poll_once(worker: IngestWorker, fid: str) -> Any:
    return await worker.poll(worker.feeds[fid])


def polls(settings: Settings, *feed_ids: str) -> list[Any]:
    """A freshly started worker polls each feed id in turn (as if due), then closes: one report each."""
    async def run() -> list[Any]:
        w = IngestWorker(settings)
        await w.startup()
        try:
            return [await poll_once(w, fid) for fid in feed_ids]
        finally:
            await w.close()
    return asyncio.run(run())


def items(*specs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"title": t, "link": link, "guid": link, "description": f"About {t}"} for t, link in specs]


def test_new_entries_published_once_keyed_by_id_then_304_across_a_restart(
        isettings: Settings, server: FeedServer) -> None:
    body = rss(items(("Alpha", "https://news.example/a"), ("Beta", "https://news.example/b"),
                     ("Gamma", "https://news.example/c")))
    feed_handler = Conditional(body, etag='"e1"', last_modified="Sun, 06 Nov 1994 08:49:37 GMT")
    server.routes["/feed"] = feed_handler
    feed = add_feed(isettings, server.url("/feed"), name="Example")

    r1, r2 = polls(isettings, feed.id, feed.id)
    assert (r1.outcome, r1.new) == ("200", 3) and (r2.outcome, r2.new) == ("304", 0)
    got = consume(isettings, 3)
    assert len(got) == 3
    assert {a.title for _, a, _ in got} == {"Alpha", "Beta", "Gamma"}
    assert all(k == a.id and a.feed_id == feed.id and a.source == "Example" for k, a, _ in got)
    st = StateStore(wstate.connect(isettings), isettings).get(feed.id)
    assert st is not None and st.etag == '"e1"' and st.last_modified == "Sun, 06 Nov 1994 08:49:37 GMT"

    (r3,) = polls(isettings, feed.id)  # after a restart
    assert r3.outcome == "304"
    last = server.hits("/feed")[-1]
    assert last["If-None-Match"] == '"e1"' and last["If-Modified-Since"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert len(consume(isettings, 3, timeout_s=3)) == 3


def test_reserved_reordered_and_scheme_flipped_entries_are_not_repeated_retitled_ones_once_as_update(
        isettings: Settings, server: FeedServer) -> None:
    handler = Conditional(rss(items(("Alpha", "https://news.example/a"), ("Beta", "https://news.example/b"))), '"1"')
    server.routes["/feed"] = handler
    feed = add_feed(isettings, server.url("/feed"))

    async def scenario() -> list[Any]:
        w = IngestWorker(isettings)
        await w.startup()
        out = [await poll_once(w, feed.id)]
        # Re-ordered, Beta's link flipped to http and given tracking junk, a new Gamma.
        handler.set(rss(items(("Gamma", "https://news.example/c"), ("Beta", "http://news.example/b?utm_source=x"),
                              ("Alpha", "https://news.example/a"))), '"2"')
        out.append(await poll_once(w, feed.id))
        # Alpha drops out, then is served again "a day later"; Beta is retitled.
        handler.set(rss(items(("Gamma", "https://news.example/c"))), '"3"')
        out.append(await poll_once(w, feed.id))
        handler.set(rss(items(("Alpha", "https://news.example/a"), ("Beta (corrected)", "https://news.example/b"),
                              ("Gamma", "https://news.example/c"))), '"4"')
        out.append(await poll_once(w, feed.id))
        handler.set(handler.body, '"5"')  # same content, new validator
        out.append(await poll_once(w, feed.id))
        await w.close()
        return out

    r = asyncio.run(scenario())
    assert [(x.new, x.updated) for x in r] == [(2, 0), (1, 0), (0, 0), (0, 1), (0, 0)]
    got = consume(isettings, 4)
    titles = [a.title for _, a, _ in got]
    assert sorted(titles) == ["Alpha", "Beta", "Beta (corrected)", "Gamma"]
    upd = [(a, h) for _, a, h in got if a.title == "Beta (corrected)"]
    assert upd[0][0].update and upd[0][1].get("wirewatch.update") == b"1"
    assert len({k for k, _, _ in got}) == 3  # the update keeps the article id


def test_duplicate_and_missing_guids(isettings: Settings, server: FeedServer) -> None:
    body = rss([
        {"title": "Dup one", "guid": "same-guid"},
        {"title": "Dup two", "guid": "same-guid"},
        {"title": "No guid, has link", "link": "https://news.example/nolink-guid"},
        {"title": "Only a title", "pubDate": "Mon, 01 Apr 2024 10:00:00 GMT"},
        {"description": "nothing to identify me"},
    ])
    server.routes["/feed"] = static(body)
    feed = add_feed(isettings, server.url("/feed"))

    first, again = polls(isettings, feed.id, feed.id)
    # The description-only entry takes its title from the description, so it is identified by title too.
    assert first.new == 4 and again.new == 0
    assert again.unchanged  # same bytes, no validators: not parsed again
    titles = sorted(a.title for _, a, _ in consume(isettings, 4))
    assert titles == ["Dup one", "No guid, has link", "Only a title", "nothing to identify me"]


def test_301_updates_the_stored_url_and_410_disables_with_reason(isettings: Settings, server: FeedServer) -> None:
    server.routes["/old"] = redirect("/new", 301)
    server.routes["/new"] = Conditional(rss(items(("Moved", "https://news.example/m"))), '"m"')
    server.routes["/gone"] = static(b"", 410)
    moved = add_feed(isettings, server.url("/old"))
    gone = add_feed(isettings, server.url("/gone"))

    r_moved, r_gone, r_again = polls(isettings, moved.id, gone.id, moved.id)
    reg = regmod.feeds(wstate.connect(isettings), isettings)
    after = reg.get(moved.id)
    assert r_moved.new == 1 and after is not None and after.url == server.url("/new")
    assert r_again.outcome == "304" and len(server.hits("/old")) == 1
    disabled = reg.get(gone.id)
    assert r_gone.outcome == "410" and disabled is not None and not disabled.enabled
    assert "410 Gone" in disabled.disabled_reason


def test_429_retry_after_sets_the_next_poll_and_counts_an_error(isettings: Settings, server: FeedServer) -> None:
    server.routes["/busy"] = static(b"", 429, {"Retry-After": "25"})
    feed = add_feed(isettings, server.url("/busy"))

    before = time.time()
    (r,) = polls(isettings, feed.id)
    st = StateStore(wstate.connect(isettings), isettings).get(feed.id)
    assert r.outcome == "429" and st is not None and st.errors == 1
    assert before + 24 <= st.next_due <= time.time() + 26
    assert "429" in st.last_error


def test_failed_publish_marks_nothing_seen_and_keeps_old_validators(isettings: Settings, server: FeedServer) -> None:
    server.routes["/feed"] = Conditional(rss(items(("Kept", "https://news.example/k"))), '"v"')
    feed = add_feed(isettings, server.url("/feed"))
    sink = ListSink()
    sink.fail = RuntimeError("broker unreachable")

    async def scenario() -> list[Any]:
        w = IngestWorker(isettings, sink=sink)
        await w.startup()
        out = [await poll_once(w, feed.id)]
        sink.fail = None
        out.append(await poll_once(w, feed.id))
        await w.close()
        return out

    failed, retried = asyncio.run(scenario())
    assert failed.outcome == "publish_error"
    assert retried.outcome == "200" and retried.new == 1
    assert [a.title for a in sink.articles] == ["Kept"]
    # The retry was an unconditional GET: the failed fetch's ETag had not been stored.
    assert "If-None-Match" not in server.hits("/feed")[1]


def test_entry_claimed_by_another_live_worker_is_retried_not_skipped(isettings: Settings, server: FeedServer) -> None:
    server.routes["/feed"] = Conditional(rss(items(("Shared", "https://news.example/s"))), '"s"')
    feed = add_feed(isettings, server.url("/feed"))
    client = wstate.connect(isettings)
    other = SeenStore(client, isettings, owner="other-worker")
    sink = ListSink()

    async def scenario() -> list[Any]:
        w = IngestWorker(isettings, sink=sink)
        await w.startup()
        # Another worker fetched the same article (say, from another feed) and has not been acknowledged yet.
        aid = article_id(url="https://news.example/s", feed_url=feed.url)
        other.claim([(aid, content_hash("Shared", "About Shared"))])
        out = [await poll_once(w, feed.id)]
        st = w.state[feed.id]
        out.append(st)
        await asyncio.sleep(3.2)  # the other worker died: its lease lapses
        out.append(await poll_once(w, feed.id))
        await w.close()
        return out

    busy, st, later = asyncio.run(scenario())
    assert busy.busy == 1 and busy.new == 0 and st.etag is None
    assert later.new == 1 and [a.title for a in sink.articles] == ["Shared"]


class _SlowFetcher:
    """A Fetcher that takes 0.2 s per fetch and records how many ran at once, per host and overall."""

    def __init__(self) -> None:
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.total = 0
        self.peak_total = 0
        self.urls: list[str] = []

    async def fetch(self, url: str, conditional: Any = None) -> Any:
        from urllib.parse import urlsplit

        from ingest.fetcher import FetchResult, Outcome

        host = urlsplit(url).hostname or ""
        self.active[host] = self.active.get(host, 0) + 1
        self.total += 1
        self.peak[host] = max(self.peak.get(host, 0), self.active[host])
        self.peak_total = max(self.peak_total, self.total)
        self.urls.append(url)
        await asyncio.sleep(0.2)
        self.active[host] -= 1
        self.total -= 1
        return FetchResult(Outcome.NOT_MODIFIED, url, 304)


def test_global_and_per_host_concurrency_limits_hold(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(ingest=INGEST | {"concurrency": 3, "per_host_concurrency": 2}, api=API)
    for host in ("a.example", "b.example"):
        for i in range(6):
            add_feed(s, f"https://{host}/feed/{i}")
    fetcher = _SlowFetcher()

    async def scenario() -> None:
        w = IngestWorker(s, fetcher=fetcher, sink=ListSink())
        task = asyncio.create_task(w.run())
        deadline = time.monotonic() + 30
        while len(set(fetcher.urls)) < 12 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        w.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert len(set(fetcher.urls)) == 12
    assert fetcher.peak == {"a.example": 2, "b.example": 2}
    assert fetcher.peak_total == 3


def test_config_feeds_are_seeded_without_overwriting_api_edits(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(ingest=INGEST | {"feeds": [{"url": "https://cfg.example/rss", "name": "From config"}]}, api=API)
    reg = regmod.feeds(wstate.connect(s), s)
    fid = feed_id("https://cfg.example/rss")

    async def start() -> list[str]:
        w = IngestWorker(s, fetcher=_SlowFetcher(), sink=ListSink())
        await w.startup()
        names = [f.name for f in w.feeds.values()]
        await w.close()
        return names

    assert asyncio.run(start()) == ["From config"]
    edited = reg.get(fid)
    assert edited is not None
    reg.put(edited.model_copy(update={"name": "Renamed by the API"}))
    assert asyncio.run(start()) == ["Renamed by the API"]


def test_json_feed_over_gzip_is_published(isettings: Settings, server: FeedServer) -> None:
    import gzip
    from pathlib import Path

    from ingest_server import respond

    body = (Path(__file__).resolve().parents[1] / "fixtures" / "feeds" / "jsonfeed11.json").read_bytes()
    server.routes["/feed.json"] = lambda h: respond(h, 200, gzip.compress(body), {
        "Content-Type": "application/feed+json", "Content-Encoding": "gzip"})
    feed = add_feed(isettings, server.url("/feed.json"))

    (r,) = polls(isettings, feed.id)
    assert (r.outcome, r.new) == ("200", 3)
    arts = {a.title: a for _, a, _ in consume(isettings, 3)}
    assert arts["Quake hits coast"].summary == "A magnitude 6 quake…"
    assert arts["No link here"].url is None and arts["No link here"].language == "en"  # ISO 639-1 from "en-US"
    assert arts["Relative link, no title."].url == server.url("/a/3")  # resolved against the feed's URL


def test_registry_edits_reach_the_running_worker_within_seconds(isettings: Settings, server: FeedServer) -> None:
    """Hot reload: a changed URL is fetched from then on, a disabled feed is no longer fetched."""
    server.routes["/v1"] = static(rss(items(("One", "https://news.example/1"))))
    server.routes["/v2"] = static(rss(items(("Two", "https://news.example/2"))))
    server.routes["/other"] = static(rss(items(("Other", "https://news.example/o"))))
    moving = add_feed(isettings, server.url("/v1"))
    stopping = add_feed(isettings, server.url("/other"))
    reg = regmod.feeds(wstate.connect(isettings), isettings)

    async def scenario() -> float:
        w = IngestWorker(isettings)
        task = asyncio.create_task(w.run())
        while not (server.hits("/v1") and server.hits("/other")):
            await asyncio.sleep(0.1)
        changed_at = time.monotonic()
        reg.put(moving.model_copy(update={"url": server.url("/v2")}))
        reg.put(stopping.model_copy(update={"enabled": False}))
        while not server.hits("/v2") and time.monotonic() - changed_at < 15:
            await asyncio.sleep(0.1)
        took = time.monotonic() - changed_at
        other_hits = len(server.hits("/other"))
        await asyncio.sleep(3)  # several poll intervals (min 1 s)
        assert len(server.hits("/other")) <= other_hits + 1  # at most one poll already in flight
        w.stop()
        await asyncio.wait_for(task, 15)
        return took

    took = asyncio.run(scenario())
    assert server.hits("/v2") and took < 5
    titles = {a.title for _, a, _ in consume(isettings, 3)}
    assert {"One", "Two", "Other"} <= titles


def test_huge_feed_is_cut_to_max_entries_newest_first_and_claimed_in_chunks(
        make_settings: Callable[..., Settings], server: FeedServer) -> None:
    s = make_settings(ingest=INGEST | {"max_entries": 1000}, api=API)
    stories = items(*((f"Story {i}", f"https://huge.example/{i}") for i in range(1200)))
    server.routes["/huge"] = static(rss(stories))
    feed = add_feed(s, server.url("/huge"))
    sink = ListSink()

    async def scenario() -> list[Any]:
        w = IngestWorker(s, sink=sink)
        await w.startup()
        out = [await poll_once(w, feed.id)]
        server.routes["/huge"] = static(rss(stories, title="Same stories, new channel title"))
        out.append(await poll_once(w, feed.id))
        await w.close()
        return out

    first, again = asyncio.run(scenario())
    assert (first.new, again.new, again.seen) == (1000, 0, 1000)
    assert {a.title for a in sink.articles} == {f"Story {i}" for i in range(1000)}


def test_identical_body_without_validators_is_not_reparsed_but_reread_daily(
        isettings: Settings, server: FeedServer) -> None:
    server.routes["/plain"] = static(rss(items(("Plain", "https://plain.example/1"))))
    feed = add_feed(isettings, server.url("/plain"))

    async def scenario() -> list[Any]:
        w = IngestWorker(isettings)
        await w.startup()
        out = [await poll_once(w, feed.id), await poll_once(w, feed.id)]
        w.state[feed.id] = w.state[feed.id].with_(read_at=time.time() - 2 * 86400)
        out.append(await poll_once(w, feed.id))
        await w.close()
        return out

    first, same, daily = asyncio.run(scenario())
    assert (first.new, first.unchanged) == (1, False)
    assert (same.outcome, same.unchanged, same.new, same.seen) == ("200", True, 0, 0)
    assert (daily.unchanged, daily.seen, daily.new) == (False, 1, 0)
