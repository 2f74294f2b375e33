"""Delivery against real misbehaving receivers on 127.0.0.1: 5xx then recovery, 429 with Retry-After, a
receiver that hangs (others are not delayed), and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import json
import time
from collections.abc import Callable
from email import policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from alerts import delivery, testsend
from alerts.outbox import Entry
from alerts.recorder import Recorder
from alerts.worker import AlertsWorker
from tests.integration import alerts_support as support
from tests.integration.alerts_support import Hang, Receiver, match, produce, read_deliveries, running, webhook_sub
from wirewatch import bus, stack, state
from wirewatch.bus import Producer
from wirewatch.records import ChannelKind, ChannelSpec, DeliveryStatus, Subscription
from wirewatch.settings import Settings

# Test receivers listen on loopback, which the SSRF guard refuses unless the operator allows it.
LOOPBACK = {"url_allowlist": ["127.0.0.1"]}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
FAST = {"metrics_port": None, "max_wait_ms": 20, "backoff_initial_s": 0.2, "backoff_max_s": 2.0,
        "send_timeout_s": 1.0, "claim_lease_s": 5.0}


def _settings(make_settings: Callable[..., Settings], subs: list[Subscription], **alerts: Any) -> Settings:
    subscriptions = [x.model_dump(mode="json") for x in subs]
    s = make_settings(api=LOOPBACK, alerts={**FAST, **alerts, "subscriptions": subscriptions})
    bus.ensure_default_topics(s)
    return s


def test_500_then_recovery_is_retried_with_the_same_key_and_every_attempt_recorded(
        make_settings: Callable[..., Settings]) -> None:
    def flaky(rx: Receiver, req: dict[str, Any]) -> tuple[int, dict[str, str]]:
        return (500, {}) if len(rx.requests) <= 2 else (200, {})

    with Receiver(secret="s3cret", behaviour=flaky) as rx:
        s = _settings(make_settings, [webhook_sub("desk", rx.url)])
        produce(s, [match("m1", "Hospital in Idlib hit by air strike")])
        with running(AlertsWorker(s)):
            assert rx.wait_for(1, 30)
            records = read_deliveries(s, 3, 20)
        assert len(rx.requests) == 3 and len(rx.accepted) == 1
        assert len({r["headers"]["Idempotency-Key"] for r in rx.requests}) == 1
        attempts = sorted((d.attempts, d.status) for d in records)
        assert attempts == [(1, DeliveryStatus.FAILED), (2, DeliveryStatus.FAILED), (3, DeliveryStatus.SENT)]
        assert all("HTTP 500" in d.reason and d.reason.startswith("retry in") for d in records if d.attempts < 3)


def test_429_retry_after_is_honoured(make_settings: Callable[..., Settings]) -> None:
    def limited(rx: Receiver, req: dict[str, Any]) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "2"}) if len(rx.requests) == 1 else (200, {})

    with Receiver(secret="s3cret", behaviour=limited) as rx:
        s = _settings(make_settings, [webhook_sub("desk", rx.url)])
        produce(s, [match("m1", "UN envoy arrives in Damascus for talks")])
        with running(AlertsWorker(s)):
            assert rx.wait_for(1, 60)
        gap = rx.requests[1]["at"] - rx.requests[0]["at"]
        print(f"429 Retry-After: 2 -> next attempt after {gap:.2f}s (backoff alone would be <= 0.2s)")
        assert gap >= 1.9


def test_other_4xx_is_not_retried(make_settings: Callable[..., Settings]) -> None:
    with Receiver(behaviour=lambda rx, req: (404, {})) as rx:
        s = _settings(make_settings, [webhook_sub("desk", rx.url, secret=None)])
        produce(s, [match("m1", "Aid convoy enters Douma")])
        with running(AlertsWorker(s)):
            records = read_deliveries(s, 1, 20)
            time.sleep(1.0)  # several backoff periods: a retry would show up now
        assert len(rx.requests) == 1
        assert [d.status for d in records] == [DeliveryStatus.FAILED] and "HTTP 404" in records[0].reason


def test_a_hanging_receiver_never_delays_other_subscriptions(make_settings: Callable[..., Settings]) -> None:
    hang = Hang()

    with Receiver(behaviour=hang) as stuck, Receiver(secret="s3cret") as fine:
        subs = [webhook_sub("stuck", stuck.url, secret=None), webhook_sub("fine", fine.url)]
        s = _settings(make_settings, subs, per_channel_concurrency=2)
        stories = [match(f"m{i}", title) for i, title in enumerate([
            "Rebels withdraw from Manbij", "Floods hit Hasakah province", "Power cut across Damascus",
            "Border crossing at Bab al-Hawa reopens", "Wheat harvest in Raqqa falls by half",
            "Cholera cases reported in Deir ez-Zor"])]
        with running(AlertsWorker(s)):
            time.sleep(2.0)  # the consumer group settles first, so the timing below is about delivery only
            started = time.monotonic()
            produce(s, stories)
            assert fine.wait_for(6, 20)
            took = max(r["at"] for r in fine.accepted) - started
            hang.release.set()
        print(f"healthy subscription got 6/6 in {took:.2f}s while the other destination hung "
              f"(its sends in flight peaked at {hang.max}, limit 2, timeout 1s)")
        assert took < 3.0
        assert hang.max <= 2


class _Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.rcpts: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        self.rcpts.append(list(envelope.rcpt_tos))
        return "250 OK"


def test_email_arrives_over_smtp_with_text_and_html_parts(make_settings: Callable[..., Settings]) -> None:
    sink = _Sink()
    port = stack.free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sub = Subscription(id="mail", topic_id="syria",
                           channel=ChannelSpec(type=ChannelKind.EMAIL, target="desk@example.org"))
        s = _settings(make_settings, [sub], smtp_port=port, smtp_from="wirewatch@example.org")
        produce(s, [match("e1", "Evacuation of <b>Daraya</b> begins", "Buses left & more <script>x</script>")])
        with running(AlertsWorker(s)):
            deadline = time.monotonic() + 30
            while not sink.messages and time.monotonic() < deadline:
                time.sleep(0.05)
            records = read_deliveries(s, 1, 20)
    finally:
        controller.stop()
    assert len(sink.messages) == 1 and sink.rcpts[0] == ["desk@example.org"]
    msg = email.message_from_bytes(sink.messages[0], policy=policy.default)
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}  # type: ignore[attr-defined]
    assert set(parts) == {"text/plain", "text/html"}
    assert "&lt;script&gt;" in parts["text/html"] and "<script>" not in parts["text/html"]
    assert "Evacuation of <b>Daraya</b> begins" in msg["Subject"]
    assert msg["X-Wirewatch-Idempotency-Key"] == records[0].idempotency_key
    assert records[0].status == DeliveryStatus.SENT and records[0].response.startswith("SMTP 250")


@pytest.mark.parametrize("kind", [ChannelKind.SLACK, ChannelKind.TEAMS, ChannelKind.APPRISE])
def test_slack_teams_and_apprise_reach_a_real_receiver_with_feed_markup_neutralized(
        make_settings: Callable[..., Settings], kind: ChannelKind) -> None:
    with Receiver() as rx:
        port = rx.server.server_address[1]
        target = f"json://127.0.0.1:{port}/hook" if kind is ChannelKind.APPRISE else rx.url
        sub = Subscription(id="chat", topic_id="syria", channel=ChannelSpec(type=kind, target=target))
        s = _settings(make_settings, [sub])
        produce(s, [match("x1", "<!channel> Shelling in <https://evil.example|Homs> *now*", "<b>bold</b> claim")])
        with running(AlertsWorker(s)):
            assert rx.wait_for(1, 30)
    body = rx.accepted[0]["json"]
    text = json.dumps(body)
    if kind is ChannelKind.SLACK:
        assert body["blocks"][0]["type"] == "header" and body["unfurl_links"] is False
        mrkdwn = [e["text"] for b in body["blocks"] for e in b.get("elements", []) if e["type"] == "mrkdwn"]
        assert mrkdwn == ["<https://news.example/x1|Open article>"]
    elif kind is ChannelKind.TEAMS:
        card = body["attachments"][0]["content"]
        assert card["type"] == "AdaptiveCard" and "<!channel>" not in text and "\\\\*now\\\\*" in text
    else:
        assert "Shelling in" in body["title"] and body["message"]
    assert "evil.example|" not in "".join(
        e["text"] for b in body.get("blocks", []) for e in b.get("elements", []) if e.get("type") == "mrkdwn")


def test_a_material_development_is_a_follow_up_threaded_to_the_first_alert(
        make_settings: Callable[..., Settings]) -> None:
    first = ("Evacuation of eastern Aleppo begins as first buses carry civilians and rebels out",
             "The first convoy of buses left eastern Aleppo on Thursday under a ceasefire deal.")
    with Receiver(secret="s3cret") as rx:
        s = _settings(make_settings, [webhook_sub("desk", rx.url, follow_ups="material")])
        with running(AlertsWorker(s)):
            produce(s, [match("f1", *first, source="Reuters")])
            assert rx.wait_for(1, 30)
            produce(s, [match("f2", *first, source="AFP"),  # the same copy: folded, silent
                        match("f3", "Evacuation of eastern Aleppo: buses carry 3,000 civilians and rebels out",
                              first[1], source="BBC")])
            assert rx.wait_for(2, 30)
            time.sleep(1.0)
    assert len(rx.accepted) == 2
    alert, update = (r["json"] for r in rx.accepted)
    assert alert["kind"] == "alert" and update["kind"] == "follow_up"
    assert update["thread_key"] == alert["idempotency_key"] and update["story_id"] == alert["story_id"]
    assert update["heading"].startswith("Update: ") and update["article_count"] == 3


def test_accept_sends_new_entries_at_once_and_leaves_a_waiting_retry_to_its_time(
        make_settings: Callable[..., Settings]) -> None:
    """The worker's fast path: outbox write and claim in one round trip, then the send; an entry that was
    already waiting (a batch replayed while its retry is scheduled) keeps its attempt count and due time."""
    with Receiver(secret="s3cret") as rx:
        sub = webhook_sub("desk", rx.url)
        s = _settings(make_settings, [sub])
        client = state.connect(s)
        producer = Producer(s, client_id="test")
        recorder = Recorder(s, producer, client=client).start()
        d = delivery.Dispatcher(s, client, recorder).start()
        d.set_subscriptions([sub])
        try:
            waiting, fresh = testsend.test_notification(sub, "k-waiting"), testsend.test_notification(sub, "k-fresh")
            d.outbox.put_many([Entry(waiting)])
            d.outbox.reschedule(Entry(waiting, attempts=2), int((time.time() + 2.5) * 1000))
            started = time.monotonic()
            d.accept([Entry(waiting), Entry(fresh)], consumed_at=started)
            assert rx.wait_for(1, 10)
            assert support.wait_until(lambda: d.ledger.states(["k-fresh"]) == ["done"], 10)
            assert d.ledger.states(["k-waiting"]) == [None]  # its claim was given back for whoever retries
            assert [r["headers"]["Idempotency-Key"] for r in rx.accepted] == ["k-fresh"]
            assert rx.wait_for(2, 10)
            assert rx.accepted[1]["headers"]["Idempotency-Key"] == "k-waiting"
            assert rx.accepted[1]["at"] - started >= 2.3  # not before its scheduled retry
            assert support.wait_until(lambda: d.outbox.pending() == 0 and d.idle(), 10)
            records = read_deliveries(s, 2, 20)
            assert sorted((r.idempotency_key, r.status, r.attempts) for r in records) == [
                ("k-fresh", DeliveryStatus.SENT, 1), ("k-waiting", DeliveryStatus.SENT, 3)]
        finally:
            d.stop()
            recorder.stop()
            producer.close()
