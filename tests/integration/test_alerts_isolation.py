"""One subscription that fails at run time never costs another its alert or its digest (issue 12, item 2).

The failure is a time zone the worker's host cannot load although the record passed validation where it
was written (an API host with newer tzdata than a worker's, say): ``ZoneInfo`` raises inside the rules
(quiet hours) and inside the digest builder. Everything else is real: the worker, Kafka, Redis, a receiver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from kafka import KafkaConsumer
from prometheus_client import REGISTRY

import alerts.rules
from alerts.digest import Held
from alerts.worker import AlertsWorker
from tests.integration.alerts_support import (
    Receiver,
    match,
    produce,
    read_deliveries,
    running,
    wait_until,
    webhook_sub,
)
from wirewatch import bus, state
from wirewatch.records import DeliveryStatus, DigestSpec, QuietHours
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
MISSING = "Pacific/Chatham"  # valid where the record was written; absent on this worker's host
TITLES = ["Rebels withdraw from Manbij", "Floods hit Hasakah province", "Power cut across Damascus"]


def _zone_missing_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def zone(name: str) -> ZoneInfo:
        if name == MISSING:
            raise ZoneInfoNotFoundError(f"No time zone found with key {name}")
        return ZoneInfo(name)

    monkeypatch.setattr(alerts.rules, "ZoneInfo", zone)


def _errors(stage: str) -> float:
    return REGISTRY.get_sample_value("wirewatch_alerts_subscription_errors_total", {"stage": stage}) or 0.0


def _dlq(settings: Settings) -> list[Any]:
    consumer = KafkaConsumer(settings.dlq(settings.kafka.topics.matches), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=1500)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_a_subscription_failing_in_its_rules_leaves_the_topics_other_subscriptions_their_alerts(
        make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    _zone_missing_here(monkeypatch)
    before = _errors("rules")
    with Receiver(secret="s3cret") as rx:
        subs = [webhook_sub("bad", rx.url + "?sub=bad", quiet_hours=QuietHours(start="22:00", end="06:00",
                                                                               timezone=MISSING)),
                webhook_sub("good", rx.url + "?sub=good")]
        s = make_settings(api={"url_allowlist": ["127.0.0.1"]},
                          alerts={"metrics_port": None, "max_wait_ms": 20,
                                  "subscriptions": [x.model_dump(mode="json") for x in subs]})
        bus.ensure_default_topics(s)
        produce(s, [match(f"a{i}", t) for i, t in enumerate(TITLES)])
        with running(AlertsWorker(s)) as worker:
            assert rx.wait_for(3, 30), f"the good subscription got {len(rx.accepted)} of 3 alerts"
            records = read_deliveries(s, 6, 20)
            assert worker.loop is not None
    assert {r["path"] for r in rx.accepted} == {"/hook?sub=good"}
    failed = [d for d in records if d.subscription_id == "bad"]
    assert [d.status for d in failed] == [DeliveryStatus.SUPPRESSED] * 3
    assert all(d.reason == "subscription_error" for d in failed)
    assert _errors("rules") - before == 3
    assert _dlq(s) == [], "no match of the topic may go to the dead-letter topic"


def test_a_digest_that_cannot_be_built_neither_kills_the_digest_thread_nor_holds_back_another(
        make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    _zone_missing_here(monkeypatch)
    before = _errors("digest")
    with Receiver(secret="s3cret") as rx:
        # "bad" follows another topic, so only its digest (not the planning of these matches) meets the zone
        subs = [webhook_sub("bad", rx.url + "?sub=bad", topic="other",
                            quiet_hours=QuietHours(start="22:00", end="06:00", timezone=MISSING)),
                webhook_sub("good", rx.url + "?sub=good", mode="digest", digest=DigestSpec(period="hourly"))]
        s = make_settings(api={"url_allowlist": ["127.0.0.1"]},
                          alerts={"metrics_port": None, "max_wait_ms": 20,
                                  "subscriptions": [x.model_dump(mode="json") for x in subs]})
        bus.ensure_default_topics(s)
        produce(s, [match(f"d{i}", t) for i, t in enumerate(TITLES)])
        with running(AlertsWorker(s)) as worker:
            held = worker.digests.queue
            assert wait_until(lambda: len(held.peek("good")) == 3, 30)
            stories = held.peek("good")
            now = datetime.now(UTC)
            # the bad subscription's digest is due first, so a pass that dies on it never reaches the good one
            held.hold([Held("bad", topic, story, now - timedelta(seconds=2)) for topic, story in stories])
            held.postpone("good", now - timedelta(seconds=1))
            assert rx.wait_for(1, 15), "the good subscription's digest never went out"
            time.sleep(1.5)  # a few more passes of the background thread
            alive = worker.digests._thread.is_alive()
            bad_due = worker.digests.queue.due(datetime.now(UTC) + timedelta(seconds=30))
    assert alive, "the digest thread died"
    assert [r["json"]["kind"] for r in rx.accepted] == ["digest"]
    assert {r["path"] for r in rx.accepted} == {"/hook?sub=good"}
    assert _errors("digest") - before >= 1
    assert "bad" not in bad_due, "a failing digest is retried later, not on every pass"


def test_a_subscription_stored_with_an_unknown_zone_before_the_checks_costs_no_one_else_an_alert(
        make_settings: Callable[..., Settings]) -> None:
    with Receiver(secret="s3cret") as rx:
        good = webhook_sub("good", rx.url + "?sub=good")
        s = make_settings(api={"url_allowlist": ["127.0.0.1"]},
                          alerts={"metrics_port": None, "max_wait_ms": 20,
                                  "subscriptions": [good.model_dump(mode="json")]})
        bus.ensure_default_topics(s)
        legacy = {"v": "1.0", "id": "bad", "topic_id": "syria",
                  "channel": {"type": "webhook", "target": rx.url + "?sub=bad", "secret": "s3cret"},
                  "quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus_Mons"}}
        state.connect(s).hset(state.key(s, "reg", "subscriptions"), "bad", json.dumps(legacy))
        produce(s, [match(f"l{i}", t) for i, t in enumerate(TITLES)])
        with running(AlertsWorker(s)):
            assert rx.wait_for(3, 30), f"the good subscription got {len(rx.accepted)} of 3 alerts"
            records = read_deliveries(s, 6, 20)
    assert {r["path"] for r in rx.accepted} == {"/hook?sub=good"}
    assert sorted((d.subscription_id, d.reason) for d in records if d.subscription_id == "bad") == \
        [("bad", "subscription_error")] * 3
    assert _dlq(s) == []
