"""The running worker against hostile and broken feeds, a kill -9, and SIGTERM: it goes on and loses nothing.

Real HTTP server on 127.0.0.1, real Kafka, real Redis.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ingest_server import Conditional, FeedServer, gzip_bomb, huge, redirect, rss, static, trickle
from test_ingest_worker import API, Collector, add_feed, consume

from ingest.state import StateStore
from ingest.worker import IngestWorker
from wirewatch import bus
from wirewatch import registry as regmod
from wirewatch import state as wstate
from wirewatch.identity import article_id, feed_id
from wirewatch.records import Feed
from wirewatch.settings import Settings
from wirewatch.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FEEDS = ROOT / "tests" / "fixtures" / "feeds"


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_worker_goes_on_through_hostile_and_broken_feeds_and_picks_up_new_feeds(
        make_settings: Callable[..., Settings], server: FeedServer, tmp_path: Path) -> None:
    s = make_settings(ingest={"min_interval_s": 1, "max_interval_s": 2, "default_interval_s": 1, "jitter": 0,
                              "max_backoff_s": 2, "fetch_timeout_s": 2, "max_decompressed_bytes": 16 << 20,
                              "metrics_port": None, "per_host_concurrency": 16}, api=API)
    bus.ensure_default_topics(s)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    bomb, _ = gzip_bomb(200 << 20)
    good = Conditional(rss([{"title": "Good one", "link": "https://good.example/1"}]), '"g1"')
    routes: dict[str, Any] = {
        "/good": good,
        "/laughs": static((FEEDS / "billion_laughs.xml").read_bytes()),
        "/xxe": static((FEEDS / "xxe.xml.tmpl").read_bytes().replace(b"@SECRET@", str(secret).encode())),
        "/big": huge(50 << 20, chunked=True),
        "/bomb": bomb,
        "/slow": trickle(b"<rss>" + b" " * 100, 1.0),
        "/loop": redirect("/loop2"),
        "/loop2": redirect("/loop"),
        "/malformed": static((FEEDS / "malformed_with_entries.xml").read_bytes()),
        "/charset": static((FEEDS / "wrong_charset_latin1_declared_utf8.xml").read_bytes()),
        "/html": static(b"<html><body>not a feed</body></html>", headers={"Content-Type": "text/html"}),
        "/late": static(rss([{"title": "Added while running", "link": "https://late.example/1"}])),
    }
    server.routes.update(routes)
    feeds = {p: add_feed(s, server.url(p)) for p in routes if p not in ("/loop2", "/late")}
    states = StateStore(wstate.connect(s), s)
    expect = {"/good": "200", "/laughs": "200", "/xxe": "200", "/big": "too_large", "/bomb": "too_large",
              "/slow": "timeout", "/loop": "redirects", "/malformed": "200", "/charset": "200", "/html": "parse_error"}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def scenario() -> None:
        w = IngestWorker(s)
        task = asyncio.create_task(w.run())
        loop = asyncio.get_running_loop()

        def all_polled() -> bool:
            got = states.load_all()
            return all(f.id in got and got[f.id].fetches >= 1 for f in feeds.values())

        await loop.run_in_executor(None, wait_for, all_polled, 40, "every feed polled once")
        # Goes on: the good feed is polled again after all the faults, and a feed added now is picked up.
        polls = states.get(feeds["/good"].id).fetches  # type: ignore[union-attr]
        good.set(rss([{"title": "Good two", "link": "https://good.example/2"},
                      {"title": "Good one", "link": "https://good.example/1"}]), '"g2"')
        late = add_feed(s, server.url("/late"))

        def went_on() -> bool:
            g = states.get(feeds["/good"].id)
            return g is not None and g.fetches > polls + 1 and states.get(late.id) is not None

        await loop.run_in_executor(None, wait_for, went_on, 30, "the good feed polled again and the late feed polled")
        w.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    got = states.load_all()
    for path, outcome in expect.items():
        st = got[feeds[path].id]
        if outcome == "200":
            assert st.last_outcome in ("200", "304") and st.errors == 0 and st.items_new >= 1, (path, st)
        else:
            assert st.last_outcome == outcome or outcome in st.last_error, (path, st)
        if outcome != "200":
            assert st.errors >= 1 and st.next_due > st.last_attempt_at  # retried later, never parked
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grew_mib < 200, f"peak RSS grew by {grew_mib:.0f} MiB"
    msgs = consume(s, 7)
    titles = {a.title for _, a, _ in msgs}
    assert {"Good one", "Good two", "Added while running", "First item survives", "Second item survives",
            "Crème brûlée – a dessert"} <= titles
    for _, a, _ in msgs:
        assert "TOP-SECRET-VALUE" not in a.title + a.summary
        assert "lollol" not in a.title + a.summary
    assert len(msgs) == len({k for k, _, _ in msgs})  # nothing repeated


def _toml(settings: Settings, metrics_port: int) -> str:
    ing = settings.ingest
    return f"""
data_dir = "{settings.data_dir}"
[stack]
kafka_port = {settings.stack.kafka_port}
controller_port = {settings.stack.controller_port}
redis_port = {settings.stack.redis_port}
[kafka]
partitions = {settings.kafka.partitions}
[kafka.topics]
articles = "{settings.kafka.topics.articles}"
matches = "{settings.kafka.topics.matches}"
deliveries = "{settings.kafka.topics.deliveries}"
[redis]
key_prefix = "{settings.redis.key_prefix}"
[log]
level = "info"
format = "json"
[api]
url_allowlist = ["127.0.0.1"]
[ingest]
min_interval_s = {ing.min_interval_s}
max_interval_s = {ing.max_interval_s}
default_interval_s = {ing.default_interval_s}
jitter = 0
claim_lease_s = {ing.claim_lease_s}
concurrency = {ing.concurrency}
per_host_concurrency = {ing.per_host_concurrency}
metrics_port = {metrics_port}
"""


def _start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # Not ``-m wirewatch.cli``: that would load the CLI module twice (as __main__ and by import).
    cmd = [sys.executable, "-c", "from wirewatch.cli import main; main()", "--config", str(cfg), "ingest"]
    return subprocess.Popen(cmd, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def test_kill_9_mid_run_loses_nothing_and_sigterm_stops_cleanly(
        make_settings: Callable[..., Settings], server: FeedServer, tmp_path: Path) -> None:
    s = make_settings(ingest={"min_interval_s": 1, "max_interval_s": 3, "default_interval_s": 1,
                              "claim_lease_s": 2, "concurrency": 4, "per_host_concurrency": 4}, api=API)
    bus.ensure_default_topics(s)
    n_feeds, n_items = 40, 25
    expected: set[str] = set()
    reg = regmod.feeds(wstate.connect(s), s)
    for i in range(n_feeds):
        links = [f"https://farm.example/{i}/{j}" for j in range(n_items)]
        body = rss([{"title": f"Feed {i} item {j}", "link": link} for j, link in enumerate(links)])

        def slow(h: Any, body: bytes = body) -> None:
            time.sleep(0.15)  # so the kill lands while polls are in flight
            static(body)(h)

        server.routes[f"/f{i}"] = slow
        url = server.url(f"/f{i}")
        reg.put(Feed(id=feed_id(url), url=url))
        expected |= {article_id(url=link, feed_url=url) for link in links}
    cfg = tmp_path / "ingest.toml"
    port = free_port()
    cfg.write_text(_toml(s, port))
    log = tmp_path / "ingest.log"
    proc = _start(cfg, log)
    seen = Collector(s)
    try:
        wait_for(lambda: len(seen.keys()) > 0, 60, "first articles on Kafka")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = seen.keys()
        assert len(before) < len(expected), "kill landed after everything was produced"
        proc = _start(cfg, log)
        wait_for(lambda: expected <= seen.keys(), 90, "every entry of every feed on Kafka after the restart")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'wirewatch_ingest_fetches_total{outcome="200"}' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    except AssertionError as exc:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise AssertionError(f"{exc}\n--- worker log tail ---\n{tail}") from exc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        seen.close()
    lines = log.read_text().splitlines()
    assert any('"ingest_stopped"' in line for line in lines)
    assert all('"feed_id"' in line for line in lines if '"feed_polled"' in line)
    keys = [k for k, _, _ in consume(s, len(expected), timeout_s=5)]
    dupes = len(keys) - len(set(keys))
    # At-least-once: only entries of polls cut by the kill between ack and seen-commit may repeat.
    assert dupes <= n_items * 4, f"{dupes} repeats"
