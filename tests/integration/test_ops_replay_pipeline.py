"""Replay through the real classify and alerts workers: a replay delivers what was missed and never sends
again what was already sent.

Ten articles are classified and notified to subscription ``desk``. Then a topic and a subscription
(``desk-2``) are added, and the range is replayed for the new topic only: desk-2 gets its ten, desk nothing.
A second replay, for every topic, re-classifies everything and sends nothing at all.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from tests.integration import ops_support as sup
from wirewatch import bus, registry, state
from wirewatch.demo.receiver import WebhookReceiver
from wirewatch.ops import replay as rp
from wirewatch.records import ChannelSpec, Match, Subscription, Topic, decode
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N = 10


def _matches(settings: Settings) -> list[Match]:
    consumer = KafkaConsumer(settings.kafka.topics.matches, bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=3000)
    try:
        return [decode(Match, r.value) for r in consumer]
    finally:
        consumer.close()


def test_replay_delivers_what_was_missed_and_never_resends(make_settings: Callable[..., Settings],
                                                           tmp_path: Path) -> None:
    receiver = WebhookReceiver().start()
    settings, cfg = sup.pipeline_settings(make_settings, tmp_path, receiver.url)
    logs = tmp_path / "logs"
    pipeline = sup.Pipeline(cfg, logs, {"classify": 1, "alerts": 1})
    producer = bus.Producer(settings, client_id="test")

    def by_sub() -> Counter[str]:
        return Counter(r.body["subscription_id"] for r in receiver.received)

    try:
        assert sup.wait_until(lambda: len(list(logs.glob("*.log"))) == 2 and pipeline.ready(), 120), logs
        t0 = datetime.now(UTC) - timedelta(seconds=1)
        sup.produce(settings, producer, sup.articles(N, "r"))
        assert sup.wait_until(lambda: by_sub()["desk"] == N, 90), f"{by_sub()}, logs in {logs}"
        t1 = datetime.now(UTC) + timedelta(seconds=1)

        client = state.connect(settings)
        registry.topics(client, settings).put(Topic(id="second", name="Second desk", description="any news",
                                                    examples=("news",), threshold=0.0))
        registry.subscriptions(client, settings).put(Subscription(
            id="desk-2", topic_id="second", channel=ChannelSpec(type="webhook", target=receiver.url)))
        client.close()
        time.sleep(4)  # hot reload: workers poll the registry every second

        only_new = rp.replay(settings, t0, t1, topic_id="second")
        assert only_new.produced == N
        assert sup.wait_until(lambda: by_sub()["desk-2"] == N, 90), f"{by_sub()}, logs in {logs}"

        everything = rp.replay(settings, t0, t1)
        # The first replay's copies were appended after t1, so only the ten originals are in range again.
        assert (everything.produced, everything.skipped_replays) == (N, 0)
        # Both topics are classified again; wait until alerts has consumed those matches too.
        assert sup.wait_until(lambda: sum(m.replay for m in _matches(settings)) == N + 2 * N, 90)
        time.sleep(5)
    finally:
        pipeline.stop()
        producer.close()
        receiver.stop()

    assert by_sub() == {"desk": N, "desk-2": N}
    per_story = Counter((r.body["subscription_id"], r.body["story_id"]) for r in receiver.received)
    assert max(per_story.values()) == 1
    assert receiver.repeats == 0
    replayed = [m for m in _matches(settings) if m.replay]
    assert Counter(m.topic_id for m in replayed) == {"second": 2 * N, "everything": N}
