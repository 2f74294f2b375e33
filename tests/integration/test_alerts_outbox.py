"""No head-of-line blocking in the shared outbox (issue 12, item 4), against the real Redis and Kafka and real
receivers on 127.0.0.1.

The poller reads the oldest due entries. More than a poll's worth (500) of them wait for one destination at
its limit: a hanging one (concurrency) or a Slack channel (its send budget). Another subscription's entry,
due later, is a retry or what a dead process left behind; it must still go out within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from alerts import delivery, testsend
from alerts.outbox import Entry
from alerts.recorder import Recorder
from tests.integration.alerts_support import Hang, Receiver, webhook_sub
from wirewatch import bus, state
from wirewatch.bus import Producer
from wirewatch.records import ChannelKind, ChannelSpec, Subscription
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
BACKLOG = 600


@contextmanager
def _dispatcher(s: Settings, subs: list[Subscription]) -> Iterator[delivery.Dispatcher]:
    client = state.connect(s)
    producer = Producer(s, client_id="test")
    recorder = Recorder(s, producer, client=client).start()
    d = delivery.Dispatcher(s, client, recorder)
    d.set_subscriptions(subs)
    try:
        yield d
    finally:
        d.stop(5)
        recorder.stop()
        producer.close()


def _fill(d: delivery.Dispatcher, blocked: Subscription, other: Subscription) -> None:
    """The backlog for ``blocked`` due a minute ago; ``other``'s retry (2nd attempt) due a second ago."""
    now_ms = int(time.time() * 1000)
    d.outbox.put_many([Entry(testsend.test_notification(blocked, f"blocked-{i:04d}")) for i in range(BACKLOG)],
                      due_ms=now_ms - 60_000)
    retry = testsend.test_notification(other, "other-retry")
    d.outbox.put_many([Entry(retry)])
    d.outbox.reschedule(Entry(retry, attempts=1), now_ms - 1_000)


def _settings(make_settings: Callable[..., Settings], subs: list[Subscription]) -> Settings:
    s = make_settings(api={"url_allowlist": ["127.0.0.1"]},
                      alerts={"metrics_port": None, "per_channel_concurrency": 2, "send_timeout_s": 1.0,
                              "backoff_initial_s": 5.0, "backoff_max_s": 10.0,
                              "subscriptions": [x.model_dump(mode="json") for x in subs]})
    bus.ensure_default_topics(s)
    return s


def test_a_backlog_for_a_hanging_destination_never_holds_back_another_subscriptions_retry(
        make_settings: Callable[..., Settings]) -> None:
    hang = Hang()

    with Receiver(behaviour=hang) as stuck, Receiver(secret="s3cret") as fine:
        blocked, other = webhook_sub("stuck", stuck.url, secret=None), webhook_sub("fine", fine.url)
        s = _settings(make_settings, [blocked, other])
        with _dispatcher(s, [blocked, other]) as d:
            _fill(d, blocked, other)
            started = time.monotonic()
            d.start()
            got = fine.wait_for(1, 10)
            took = time.monotonic() - started
            hang.release.set()
            assert got, f"the retry never went out while {BACKLOG} entries waited for one hanging destination"
        print(f"retry out after {took:.2f}s behind {BACKLOG} entries for a hanging destination")
    assert fine.accepted[0]["headers"]["Idempotency-Key"] == "other-retry"
    assert took < 5.0
    assert 1 <= hang.max <= 2, "the hanging destination's concurrency limit still holds"


def test_a_backlog_over_a_slack_channels_budget_never_holds_back_another_subscriptions_retry(
        make_settings: Callable[..., Settings]) -> None:
    with Receiver() as chat, Receiver(secret="s3cret") as fine:
        blocked = Subscription(id="chat", topic_id="syria", channel=ChannelSpec(type=ChannelKind.SLACK,
                                                                                target=chat.url))
        other = webhook_sub("fine", fine.url)
        s = _settings(make_settings, [blocked, other])
        with _dispatcher(s, [blocked, other]) as d:
            _fill(d, blocked, other)
            started = time.monotonic()
            d.start()
            assert fine.wait_for(1, 10), f"the retry never went out while {BACKLOG} entries waited for a budget"
            took = time.monotonic() - started
            time.sleep(2.0)
            sent_to_chat = len(chat.accepted)
            waiting = d.outbox.pending()
    assert took < 5.0
    assert 1 <= sent_to_chat <= 5, "Slack's budget (1 per second) still holds"
    assert waiting == BACKLOG - sent_to_chat, "the backlog waits in the outbox: nothing dropped"
