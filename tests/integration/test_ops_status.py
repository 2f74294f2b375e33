"""``wirewatch status`` against the real broker and Redis: lag per group and partition, throughput, feeds in
error or gone quiet, recent deliveries and failures, and what it says when a service is down."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tomli_w

from ingest.state import FeedState, StateStore
from wirewatch import bus, registry, state
from wirewatch.ops import status as st
from wirewatch.ops.lag import Broker
from wirewatch.records import Delivery, DeliveryStatus, Feed, encode, utcnow
from wirewatch.settings import Settings, load_settings

pytestmark = pytest.mark.integration
WIREWATCH = str(Path(sys.executable).with_name("wirewatch"))
GROUP = "test-status-group"


def _fill(settings: Settings) -> dict[int, int]:
    """20 articles, a group that handled 8 of them, 3 deliveries and one unreadable one, three feed states.

    Returns the group's expected lag per partition.
    """
    producer = bus.Producer(settings, client_id="test")
    t = settings.kafka.topics
    producer.send_many([bus.Outgoing(t.articles, f"k{i}", b"{}") for i in range(20)])
    handled: list[bus.Consumed[bytes]] = []

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        handled.extend(batch)
        loop.stop()

    loop = bus.ConsumerLoop(settings, topics=[t.articles], group=GROUP, decode=lambda b: b, handle=handle,
                            producer=producer, config=bus.LoopConfig(batch_size=8, max_wait_ms=2000))
    loop.run()
    now = utcnow()
    deliveries = [
        Delivery(id="d1", subscription_id="desk-a", story_id="story-1", status=DeliveryStatus.SENT, attempts=1,
                 sent_at=now, channel="webhook"),
        Delivery(id="d2", subscription_id="desk-b", story_id="story-1", status=DeliveryStatus.FAILED, attempts=5,
                 reason="HTTP 500 after 5 attempts", channel="slack"),
        Delivery(id="d3", subscription_id="desk-a", story_id="story-2", status=DeliveryStatus.SUPPRESSED,
                 reason="rate limit", channel="webhook"),
    ]
    producer.send_many([bus.Outgoing(t.deliveries, d.subscription_id, encode(d)) for d in deliveries])
    producer.send_many([bus.Outgoing(t.deliveries, "x", b"not json")])
    producer.close()
    client = state.connect(settings)
    store = StateStore(client, settings)
    old = time.time() - 3 * 86400
    store.save_many([
        FeedState(feed_id="f-error", url="https://broken.example/rss", errors=3, last_outcome="5xx",
                  last_error="HTTP 503", last_success_at=old),
        FeedState(feed_id="f-quiet", url="https://quiet.example/rss", last_success_at=time.time(),
                  last_new_at=old),
        FeedState(feed_id="f-ok", url="https://fine.example/rss", last_success_at=time.time(),
                  last_new_at=time.time() - 60),
        FeedState(feed_id="f-bozo", url="https://sloppy.example/rss", last_success_at=time.time(),
                  last_new_at=time.time() - 60, problem="SAXParseException", entries=2),
    ])
    registry.feeds(client, settings).put(Feed(id="f-gone", url="https://gone.example/rss", enabled=False,
                                              disabled_reason="410 Gone"))
    client.close()
    committed = {}
    for c in handled:
        committed[c.partition] = max(committed.get(c.partition, 0), c.offset + 1)
    with Broker(settings) as b:
        ends = b.end_offsets(b.partitions(t.articles))
    return {tp.partition: end - committed.get(tp.partition, 0) for tp, end in ends.items()}


def test_status_reports_lag_throughput_feeds_and_deliveries(settings: Settings) -> None:
    expected_lag = _fill(settings)
    report = st.collect(settings, deliveries=10)
    assert [s["ok"] for s in report.stack] == [True, True]
    rows = {r["partition"]: r for r in report.lag if r["group"] == GROUP}
    assert {p: r["lag"] for p, r in rows.items()} == expected_lag
    assert sum(expected_lag.values()) == 12
    assert st.group_lag_total(report, GROUP) == 12
    articles = report.throughput[settings.kafka.topics.articles]
    assert articles["count_60s"] == 20 and articles["per_s_60s"] == pytest.approx(20 / 60, abs=0.01)
    assert report.delivery_counts == {"sent": 1, "failed": 1, "suppressed": 1}
    statuses = [d["status"] for d in report.deliveries]
    assert statuses.count("unreadable") == 1
    failed = next(d for d in report.deliveries if d["status"] == "failed")
    assert (failed["subscription_id"], failed["reason"]) == ("desk-b", "HTTP 500 after 5 attempts")
    problems = {f.feed_id: f.problem for f in report.feeds}
    assert problems == {"f-error": "error", "f-quiet": "quiet", "f-gone": "disabled", "f-bozo": "malformed"}
    assert report.feeds_total == 5
    assert "feed_state" not in report.errors
    text = st.render(report)
    for needle in ("CONSUMER GROUPS AND LAG", GROUP, "total      12", "THROUGHPUT", "FEEDS", "f-error",
                   "nothing new for", "RECENT DELIVERIES", "HTTP 500 after 5 attempts", "unreadable"):
        assert needle in text, needle


def test_cli_status_prints_one_screen_and_json(settings: Settings, tmp_path: Path) -> None:
    _fill(settings)
    cfg = tmp_path / "wirewatch.toml"
    cfg.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    screen = subprocess.run([WIREWATCH, "--config", str(cfg), "status"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert screen.returncode == 0, screen.stderr
    assert "STACK" in screen.stdout and GROUP in screen.stdout
    assert len(screen.stdout.splitlines()) < 60  # one screen
    as_json = subprocess.run([WIREWATCH, "--config", str(cfg), "status", "--json"], capture_output=True,
                             text=True, timeout=120, check=False)
    doc = json.loads(as_json.stdout)
    assert sum(r["lag"] for r in doc["lag"] if r["group"] == GROUP) == 12


def test_status_with_kafka_and_redis_down_says_so_and_exits_1(tmp_path: Path) -> None:
    from wirewatch.stack import free_port

    s = load_settings(None, data_dir=str(tmp_path), stack={"kafka_port": free_port(), "redis_port": free_port()})
    report = st.collect(s)
    assert [r["state"] for r in report.stack] == ["stopped", "stopped"]
    assert "Kafka does not answer" in report.errors["kafka"] and "Redis does not answer" in report.errors["redis"]
    assert "NOT AVAILABLE" in st.render(report)
    cfg = tmp_path / "down.toml"
    cfg.write_text(tomli_w.dumps(s.model_dump(mode="json", exclude_none=True)))
    done = subprocess.run([WIREWATCH, "--config", str(cfg), "status"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert "Kafka does not answer" in done.stdout


def test_a_live_group_that_has_not_committed_yet_shows_its_backlog_and_members(settings: Settings) -> None:
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(settings.kafka.topics.articles, f"k{i}", b"{}") for i in range(9)])
    entered, release = threading.Event(), threading.Event()

    def stuck(batch: list[bus.Consumed[bytes]]) -> None:
        entered.set()
        release.wait(30)  # a worker stuck inside its first batch: nothing committed

    loop = bus.ConsumerLoop(settings, topics=[settings.kafka.topics.articles], group="test-stuck",
                            decode=lambda b: b, handle=stuck, producer=producer)
    t = threading.Thread(target=loop.run)
    t.start()
    try:
        assert entered.wait(30)
        report = st.collect(settings)
    finally:
        loop.stop()
        release.set()
        t.join(30)
        producer.close()
    assert st.group_lag_total(report, "test-stuck") == 9
    assert all(r["committed"] is None for r in report.lag if r["group"] == "test-stuck")
    group = next(g for g in report.groups if g["group"] == "test-stuck")
    assert (group["state"], group["members"], group["idle_members"]) == ("Stable", 1, 0)
    assert "test-stuck" in st.render(report) and "1 member(s)" in st.render(report)
