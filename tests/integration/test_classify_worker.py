"""The classify worker against the real Kafka broker and redis-server: matches out with evidence and version,
bad records to the DLQ, offsets committed after the acks, topics hot-reloaded without a restart, recent store.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from classify.recent import RecentStore
from classify.topics import TopicStore, load_topic_file
from classify.worker import build
from wirewatch import bus, state
from wirewatch.records import Article, Match, Topic, decode, encode
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2016, 12, 15, 9, tzinfo=UTC)


def art(i: int, title: str, summary: str = "") -> Article:
    return Article(id=f"art-{i}", title=title, summary=summary, published_at=NOW, fetched_at=NOW,
                   feed_url="https://news.example/feed", source="news.example")


def read_all(settings: Settings, topic: str, expect: int,
             timeout_s: float = 30.0) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[tuple[bytes, bytes, dict[str, bytes]]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(out) < expect:
            for recs in consumer.poll(timeout_ms=300).values():
                out += [(r.key, r.value, dict(r.headers or [])) for r in recs]
        return out
    finally:
        consumer.close()


@pytest.fixture
def csettings(make_settings: Callable[..., Settings]) -> Settings:
    topics = [t.model_dump(mode="json") for t in load_topic_file(ROOT / "examples" / "aleppo" / "topics.toml")]
    s = make_settings(classify={"topics": topics, "backend": "onnx-int8", "metrics_port": None, "threads": 2,
                                "batch_size": 16, "max_wait_ms": 100, "recent_store_size": 5})
    bus.ensure_default_topics(s)
    return s


@pytest.fixture
def worker(csettings: Settings) -> Iterator[bus.ConsumerLoop[Article]]:
    w = build(csettings)
    thread = threading.Thread(target=w.loop.run, daemon=True)
    thread.start()
    try:
        yield w.loop
    finally:
        w.loop.stop()
        thread.join(30)
        w.close()
        assert not thread.is_alive()


def test_worker_produces_matches_dlqs_bad_records_and_commits(csettings: Settings,
                                                              worker: bus.ConsumerLoop[Article]) -> None:
    t = csettings.kafka.topics
    producer = bus.Producer(csettings, client_id="test")
    good = art(1, "Aleppo evacuation resumes as buses leave rebel districts",
               "Thousands of civilians and fighters left east Aleppo under the ceasefire deal.")
    other = art(2, "Central bank holds rates", "Inflation eased for a third month.")
    future = json.loads(encode(art(3, "x")))
    future["v"] = "2.0"
    producer.send_many([
        bus.Outgoing(t.articles, good.id, encode(good)),
        bus.Outgoing(t.articles, other.id, encode(other)),
        bus.Outgoing(t.articles, "bad", b"{not json"),  # bad JSON: DLQ
        bus.Outgoing(t.articles, "future", json.dumps(future).encode()),  # unknown schema major: DLQ
    ])
    matches = read_all(csettings, t.matches, 1)
    assert len(matches) == 1
    key, value, _ = matches[0]
    m = decode(Match, value)
    assert key == b"art-1" and m.topic_id == "aleppo-ceasefire" and m.topic_version == 1
    assert m.score >= m.threshold and "Aleppo" in m.evidence.keywords and m.evidence.closest
    assert m.evidence.counter_margin is not None and m.vector is not None and len(m.vector) == 384
    assert m.model.backend == "onnx-int8" and m.model.revision
    dlq = read_all(csettings, csettings.dlq(t.articles), 2)
    assert sorted(k for k, _, _ in dlq) == [b"bad", b"future"]
    # Offsets are committed once the batch's matches were acknowledged: all 4 records are done.
    deadline = time.monotonic() + 15
    committed = 0
    consumer = KafkaConsumer(bootstrap_servers=csettings.bootstrap_servers,
                             group_id=bus.role_group(csettings, "classify"), enable_auto_commit=False)
    try:
        parts = [TopicPartition(t.articles, p) for p in consumer.partitions_for_topic(t.articles) or ()]
        while time.monotonic() < deadline and committed < 4:
            committed = sum(consumer.committed(tp) or 0 for tp in parts)
            time.sleep(0.3)
    finally:
        consumer.close(autocommit=False)
    assert committed == 4
    recent = RecentStore(state.connect(csettings), csettings).recent()
    assert {a.id for a in recent.articles} == {"art-1", "art-2"} and recent.vectors.shape == (2, 384)
    producer.close()


def test_topic_changes_reach_the_running_worker_within_5s(csettings: Settings,
                                                          worker: bus.ConsumerLoop[Article]) -> None:
    t = csettings.kafka.topics
    store = TopicStore(state.connect(csettings), csettings)
    time.sleep(1.0)  # the worker has seeded and loaded the config's topic
    store.put(Topic(id="rates", name="Interest rates", description="Central banks set interest rates",
                    examples=("Central bank raises interest rates", "Bank holds rates as inflation cools",
                              "Rate cut expected as economy slows"), include_any=("rates", "interest rate*")))
    aleppo = store.get("aleppo-ceasefire")
    assert aleppo is not None
    store.feedback("aleppo-ceasefire", "Aleppo evacuation convoys cross into the countryside", relevant=True)
    time.sleep(5.0)
    producer = bus.Producer(csettings, client_id="test")
    rates = art(10, "Central bank holds interest rates", "Policymakers kept rates on hold as inflation cooled.")
    aleppo_art = art(11, "Aleppo evacuation completed", "The last buses left east Aleppo under the truce.")
    producer.send_many([bus.Outgoing(t.articles, a.id, encode(a)) for a in (rates, aleppo_art)])
    got = {decode(Match, v).topic_id: decode(Match, v) for _, v, _ in read_all(csettings, t.matches, 2)}
    assert set(got) == {"rates", "aleppo-ceasefire"}
    assert got["aleppo-ceasefire"].topic_version == aleppo.version + 1
    producer.close()
