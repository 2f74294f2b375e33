"""The alerts worker end to end against the real Kafka and Redis, delivering to a real signed webhook."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from alerts.worker import AlertsWorker
from tests.integration.alerts_support import Receiver, match, produce, read_deliveries, running, webhook_sub
from wirewatch import bus
from wirewatch.records import DeliveryStatus
from wirewatch.settings import Settings

# Test receivers listen on loopback, which the SSRF guard refuses unless the operator allows it.
LOOPBACK = {"url_allowlist": ["127.0.0.1"]}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WIRE = ("Syrian government and rebels agree ceasefire in southern Deraa province",
        "Government forces and rebel groups agreed on Sunday to a ceasefire across Deraa province, "
        "officials from both sides said, after weeks of fighting near the Jordanian border.")


def test_wire_copy_from_three_outlets_is_one_signed_notification(make_settings: Callable[..., Settings]) -> None:
    with Receiver(secret="s3cret") as rx:
        s = make_settings(api=LOOPBACK, alerts={"subscriptions": [webhook_sub("desk", rx.url).model_dump(mode="json")],
                                  "metrics_port": None, "max_wait_ms": 50})
        bus.ensure_default_topics(s)
        matches = [
            match("a1", *WIRE, source="Reuters"),
            match("a2", WIRE[0], WIRE[1], source="Al Arabiya"),
            match("a3", "Syria: ceasefire agreed in southern Deraa province", WIRE[1], source="The National"),
            match("b1", "Earthquake of magnitude 6.1 strikes off the coast of Latakia",
                  "A strong earthquake shook the Syrian coast near Latakia early on Tuesday.", source="AP"),
        ]
        produce(s, matches)
        with running(AlertsWorker(s)):
            assert rx.wait_for(2, 60), f"only {len(rx.accepted)} notification(s) arrived"
            records = read_deliveries(s, 4, 30)
        keys = rx.keys()
        assert rx.bad_signatures == 0
        assert len(rx.accepted) == 2, [r["json"]["heading"] for r in rx.accepted]
        assert all(n == 1 for n in keys.values())
        headings = sorted(r["json"]["heading"] for r in rx.accepted)
        assert any("Deraa" in h for h in headings) and any("Latakia" in h for h in headings)
        for r in rx.accepted:
            assert r["json"]["idempotency_key"] == r["headers"]["Idempotency-Key"]
        by_status = Counter(d.status for d in records)
        print("deliveries:", dict(by_status), "reasons:", Counter(d.reason for d in records))
        assert by_status[DeliveryStatus.SENT] == 2
        assert Counter(d.reason for d in records if d.status == DeliveryStatus.SUPPRESSED)["story_already_alerted"] == 2


def test_bad_signature_secret_is_refused_and_never_retried(make_settings: Callable[..., Settings]) -> None:
    """A receiver that rejects the signature (401, a permanent 4xx) gets one attempt, recorded as failed."""
    with Receiver(secret="the-real-secret") as rx:
        sub = webhook_sub("desk", rx.url, secret="a-wrong-secret")
        s = make_settings(api=LOOPBACK, alerts={"subscriptions": [sub.model_dump(mode="json")], "metrics_port": None})
        bus.ensure_default_topics(s)
        produce(s, [match("c1", "Convoy reaches besieged Madaya with food and medicine")])
        with running(AlertsWorker(s)):
            records = read_deliveries(s, 1, 30)
        assert rx.bad_signatures == 1 and not rx.accepted
        failed = [d for d in records if d.status == DeliveryStatus.FAILED]
        assert len(failed) == 1 and failed[0].reason.startswith("permanent: ") and "401" in failed[0].reason
        assert failed[0].attempts == 1
