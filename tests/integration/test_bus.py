"""The bus against the real broker: round trip, at-least-once across kill -9, DLQ for poison, graceful stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from wirewatch import bus
from wirewatch.records import Article, RecordError, decode, encode, utcnow
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration
CHILD = Path(__file__).with_name("consumer_child.py")


def _article(i: int) -> Article:
    now = utcnow()
    return Article(
        id=f"{i:032x}", title=f"title {i}", published_at=now, fetched_at=now, feed_url="https://f.example/rss"
    )


def _read_all(settings: Settings, topic: str, expect: int, timeout_s: float = 20) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
    finally:
        consumer.close()
    return out


@pytest.fixture
def producer(settings: Settings) -> Any:
    p = bus.Producer(settings)
    yield p
    p.close()


def _run_loop(loop: bus.ConsumerLoop[Any]) -> threading.Thread:
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    return t


def test_produce_consume_round_trip_through_group(settings: Settings, producer: bus.Producer) -> None:
    topic = settings.kafka.topics.articles
    sent = [_article(i) for i in range(50)]
    assert producer.send_many(bus.Outgoing(topic, a.id, encode(a)) for a in sent) == 50
    got: list[Article] = []
    done = threading.Event()

    def handle(batch: list[bus.Consumed[Article]]) -> None:
        got.extend(c.value for c in batch)
        if len(got) >= 50:
            done.set()

    loop = bus.ConsumerLoop(
        settings,
        topics=[topic],
        group="g-roundtrip",
        decode=lambda b: decode(Article, b),
        handle=handle,
        producer=producer,
    )
    t = _run_loop(loop)
    assert done.wait(30), f"only {len(got)} of 50 consumed"
    loop.stop()
    t.join(15)
    assert not t.is_alive(), "loop did not stop gracefully"
    assert sorted(a.id for a in got) == sorted(a.id for a in sent)
    assert got[0] == next(a for a in sent if a.id == got[0].id)


def _child(settings: Settings, topic: str, group: str, out: Path, mode: str) -> subprocess.Popen[bytes]:
    overrides = {
        "data_dir": str(settings.data_dir),
        "stack": settings.stack.model_dump(mode="json"),
        "kafka": settings.kafka.model_dump(mode="json"),
        "redis": settings.redis.model_dump(mode="json"),
    }
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen([sys.executable, str(CHILD), json.dumps(overrides), topic, group, str(out), mode], env=env)


def _wait_for(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.exists() else []


def test_killed_before_commit_redelivers_batch(settings: Settings, tmp_path: Path, producer: bus.Producer) -> None:
    topic, group = settings.kafka.topics.articles, f"g-kill-{uuid.uuid4().hex[:6]}"
    producer.send_many(bus.Outgoing(topic, str(i), f"m{i}".encode()) for i in range(30))
    first = tmp_path / "first.txt"
    proc = _child(settings, topic, group, first, "hang")
    try:
        _wait_for(lambda: len(_lines(first)) > 0, 60, "first consumer to handle a batch")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    handled_before = {ln.split(":", 2)[2] for ln in _lines(first)}
    second = tmp_path / "second.txt"
    proc2 = _child(settings, topic, group, second, "commit")
    try:
        _wait_for(
            lambda: {ln.split(":", 2)[2] for ln in _lines(second) if ln != "committed"} >= {f"m{i}" for i in range(30)},
            60,
            "second consumer to receive all 30",
        )
    finally:
        proc2.terminate()
        proc2.wait(20)
    redelivered = {ln.split(":", 2)[2] for ln in _lines(second) if ln != "committed"}
    assert handled_before and handled_before <= redelivered, "uncommitted batch was lost"
    print(f"killed before commit: {len(handled_before)} handled, {len(handled_before & redelivered)} redelivered")


def test_killed_after_commit_is_not_reread(settings: Settings, tmp_path: Path, producer: bus.Producer) -> None:
    topic, group = settings.kafka.topics.articles, f"g-kill2-{uuid.uuid4().hex[:6]}"
    producer.send_many(bus.Outgoing(topic, str(i), f"a{i}".encode()) for i in range(20))
    first = tmp_path / "first.txt"
    proc = _child(settings, topic, group, first, "commit")
    try:
        _wait_for(
            lambda: (
                {ln for ln in _lines(first) if ln != "committed"}.__len__() >= 20 and _lines(first)[-1] == "committed"
            ),
            60,
            "first consumer to handle and commit all 20",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    producer.send_many(bus.Outgoing(topic, str(i), f"b{i}".encode()) for i in range(5))
    second = tmp_path / "second.txt"
    proc2 = _child(settings, topic, group, second, "commit")
    try:
        _wait_for(
            lambda: len([ln for ln in _lines(second) if ln.split(":")[-1].startswith("b")]) >= 5,
            60,
            "second consumer to get the new messages",
        )
        time.sleep(1.0)
    finally:
        proc2.terminate()
        proc2.wait(20)
    values = [ln.split(":", 2)[2] for ln in _lines(second) if ln != "committed"]
    assert sorted(values) == sorted(f"b{i}" for i in range(5)), f"re-read committed messages: {values}"


def test_poison_messages_go_to_dlq_and_loop_goes_on(settings: Settings, producer: bus.Producer) -> None:
    topic = settings.kafka.topics.articles
    good = [_article(i) for i in range(10)]
    items = [bus.Outgoing(topic, a.id, encode(a)) for a in good]
    items.insert(3, bus.Outgoing(topic, "bad-json", b"{not json"))
    items.insert(
        6, bus.Outgoing(topic, "bad-version", json.dumps({"v": "9.0", "id": "x"}).encode(), [("trace", b"t1")])
    )
    items.insert(8, bus.Outgoing(topic, "crash-me", encode(_article(999))))
    producer.send_many(items)
    handled: list[str] = []

    def handle(batch: list[bus.Consumed[Article]]) -> None:
        for c in batch:
            if c.value.id == f"{999:032x}":
                raise ValueError("handler cannot process this article")
        handled.extend(c.value.id for c in batch)

    loop = bus.ConsumerLoop(
        settings,
        topics=[topic],
        group="g-dlq",
        decode=lambda b: decode(Article, b),
        handle=handle,
        producer=producer,
        config=bus.LoopConfig(dlq_min_count=1000),
    )
    t = _run_loop(loop)
    _wait_for(lambda: len(handled) >= 10, 30, "good messages handled")
    loop.stop()
    t.join(15)
    assert sorted(handled) == sorted(a.id for a in good)
    dlq = _read_all(settings, settings.dlq(topic), 3)
    by_key = {r.key.decode(): r for r in dlq}
    assert set(by_key) == {"bad-json", "bad-version", "crash-me"}
    headers = {k: v.decode() for k, v in by_key["bad-version"].headers}
    assert "unsupported schema version" in headers["wirewatch.error"]
    assert headers["wirewatch.error.kind"] == "decode" and headers["trace"] == "t1"
    assert headers["wirewatch.source.topic"] == topic
    assert by_key["bad-json"].value == b"{not json"
    crash = {k: v.decode() for k, v in by_key["crash-me"].headers}
    assert crash["wirewatch.error.kind"] == "handler" and "cannot process" in crash["wirewatch.error"]


def test_dlq_ratio_limit_stops_loudly_without_committing(settings: Settings, producer: bus.Producer) -> None:
    topic = settings.kafka.topics.articles
    producer.send_many(bus.Outgoing(topic, str(i), b"garbage") for i in range(60))
    errors: list[BaseException] = []
    loop = bus.ConsumerLoop(
        settings,
        topics=[topic],
        group="g-ratio",
        decode=lambda b: decode(Article, b),
        handle=lambda batch: None,
        producer=producer,
        config=bus.LoopConfig(dlq_min_count=20, dlq_max_ratio=0.9, dlq_window=50),
    )

    def run() -> None:
        try:
            loop.run()
        except bus.DlqRatioExceeded as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert errors and "failed" in str(errors[0])
    assert _read_all(settings, settings.dlq(topic), 1, timeout_s=3) == []


def test_transient_handler_error_retries_batch_without_loss(settings: Settings, producer: bus.Producer) -> None:
    topic = settings.kafka.topics.articles
    producer.send_many(bus.Outgoing(topic, str(i), f"v{i}".encode()) for i in range(5))
    calls = {"n": 0}
    handled: list[bytes] = []

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ConnectionError("downstream unavailable")
        handled.extend(c.value for c in batch)

    loop = bus.ConsumerLoop(
        settings,
        topics=[topic],
        group="g-transient",
        decode=lambda b: b,
        handle=handle,
        producer=producer,
        config=bus.LoopConfig(max_backoff_s=0.5),
    )
    t = _run_loop(loop)
    _wait_for(lambda: len(handled) >= 5, 30, "batch handled after retries")
    loop.stop()
    t.join(15)
    assert sorted(handled) == sorted(f"v{i}".encode() for i in range(5))
    assert _read_all(settings, settings.dlq(topic), 1, timeout_s=2) == []


def test_decode_errors_are_record_errors() -> None:
    with pytest.raises(RecordError):
        decode(Article, b"")
