"""Subscription rules through the running worker, the real Kafka and Redis and a real receiver: rate-limit
overflow and quiet hours end as one digest, mutes suppress, and subscription edits apply without restart."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

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
from wirewatch import bus, registry, state
from wirewatch.records import DeliveryStatus, QuietHours, RateLimit, Subscription
from wirewatch.settings import Settings

# Test receivers listen on loopback, which the SSRF guard refuses unless the operator allows it.
LOOPBACK = {"url_allowlist": ["127.0.0.1"]}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
TITLES = ["Rebels withdraw from Manbij", "Floods hit Hasakah province", "Power cut across Damascus",
          "Border crossing at Bab al-Hawa reopens", "Wheat harvest in Raqqa falls by half"]


def _settings(make_settings: Callable[..., Settings], subs: list[Subscription]) -> Settings:
    s = make_settings(api=LOOPBACK, alerts={"metrics_port": None, "max_wait_ms": 20,
                              "subscriptions": [x.model_dump(mode="json") for x in subs]})
    bus.ensure_default_topics(s)
    return s


def _stories(prefix: str = "r") -> list[Any]:
    return [match(f"{prefix}{i}", t) for i, t in enumerate(TITLES)]


def test_rate_limit_overflow_is_held_and_delivered_as_one_digest(make_settings: Callable[..., Settings]) -> None:
    with Receiver(secret="s3cret") as rx:
        s = _settings(make_settings, [webhook_sub("desk", rx.url, rate_limit=RateLimit(count=2, per_seconds=3600))])
        produce(s, _stories())
        with running(AlertsWorker(s)) as worker:
            assert rx.wait_for(2, 30)
            held = read_deliveries(s, 5, 20)
            assert worker.digests.run_once(datetime.now(UTC) + timedelta(hours=2)) == 1
            assert rx.wait_for(3, 20)
            # a later copy of a story that went out in the digest does not alert again
            produce(s, [match("late", TITLES[4], source="Other Outlet")])
            records = read_deliveries(s, 9, 20)
    kinds = Counter(r["json"]["kind"] for r in rx.accepted)
    assert kinds == {"alert": 2, "digest": 1}
    digest = next(r["json"] for r in rx.accepted if r["json"]["kind"] == "digest")
    instant = {r["json"]["items"][0]["title"] for r in rx.accepted if r["json"]["kind"] == "alert"}
    assert {i["title"] for i in digest["items"]} == set(TITLES) - instant
    queued = [d for d in held if d.status == DeliveryStatus.QUEUED]
    assert len(queued) == 3 and all(d.reason.startswith("rate_limited: held until") for d in queued)
    assert any(d.status == DeliveryStatus.SUPPRESSED and d.reason == "story_already_alerted" for d in records)


def test_quiet_hours_hold_alerts_then_send_one_digest_when_they_end(make_settings: Callable[..., Settings]) -> None:
    now = datetime.now(UTC)
    start, end = (now - timedelta(minutes=5)).strftime("%H:%M"), (now + timedelta(minutes=30)).strftime("%H:%M")
    with Receiver(secret="s3cret") as rx:
        s = _settings(make_settings, [webhook_sub("desk", rx.url, quiet_hours=QuietHours(start=start, end=end))])
        produce(s, _stories()[:3])
        with running(AlertsWorker(s)) as worker:
            records = read_deliveries(s, 3, 30)
            assert [d.status for d in records] == [DeliveryStatus.QUEUED] * 3
            assert worker.digests.run_once(datetime.now(UTC)) == 0  # still quiet: nothing goes out
            time.sleep(0.5)
            assert not rx.accepted
            assert worker.digests.run_once(now + timedelta(minutes=31)) == 1
            assert rx.wait_for(1, 20)
    assert len(rx.accepted) == 1
    body = rx.accepted[0]["json"]
    assert body["kind"] == "digest" and len(body["items"]) == 3 and len(body["story_ids"]) == 3


def test_a_muted_subscription_gets_nothing_and_each_suppression_is_recorded(
        make_settings: Callable[..., Settings]) -> None:
    with Receiver(secret="s3cret") as rx:
        muted = webhook_sub("desk", rx.url, muted_until=datetime.now(UTC) + timedelta(hours=1))
        s = _settings(make_settings, [muted])
        produce(s, _stories()[:2])
        with running(AlertsWorker(s)):
            records = read_deliveries(s, 2, 30)
    assert not rx.requests
    assert [(d.status, d.reason) for d in records] == [(DeliveryStatus.SUPPRESSED, "muted")] * 2


def test_a_subscription_added_while_running_gets_alerts_within_five_seconds(
        make_settings: Callable[..., Settings]) -> None:
    with Receiver(secret="s3cret") as first, Receiver(secret="s3cret") as added:
        s = _settings(make_settings, [webhook_sub("first", first.url)])
        with running(AlertsWorker(s)):
            produce(s, _stories()[:1])
            assert first.wait_for(1, 30)
            registry.subscriptions(state.connect(s), s).put(webhook_sub("added", added.url))
            changed = time.monotonic()
            assert wait_until(lambda: _sees(s, added, changed), 10)
            took = time.monotonic() - changed
    print(f"new subscription effective after {took:.2f}s")
    assert took < 5.0


def _sees(s: Settings, rx: Receiver, since: float) -> bool:
    if rx.accepted:
        return True
    produce(s, [match(f"h{int((time.monotonic() - since) * 10)}", f"Story number {time.monotonic():.3f} in Homs")])
    return rx.wait_for(1, 0.5)
