"""A clearly marked test notification, sent synchronously with the runner's retry policy (CLI and API)."""

from __future__ import annotations

import time

from alerts import channels
from alerts.channels import Notification, PermanentSendError, RetryableSendError
from alerts.channels._http import POOL
from alerts.channels.base import Item
from alerts.delivery import ChannelBuilder
from alerts.sendpolicy import backoff
from wirewatch.records import Subscription, utcnow
from wirewatch.settings import Settings


def test_notification(sub: Subscription, key: str) -> Notification:
    """A clearly marked test notification for ``sub``."""
    item = Item(title="Wirewatch test notification: this channel is connected",
                summary=f"Sent on request to check subscription {sub.id}. No action needed.",
                source="Wirewatch", published_at=utcnow())
    return Notification(key=key, kind="test", subscription_id=sub.id, topic_id=sub.topic_id, story_id="test",
                        items=(item,), reason="test requested by an operator")


def send_now(settings: Settings, sub: Subscription, key: str, *,
             build: ChannelBuilder = channels.build) -> tuple[bool, int, str]:
    """Send a test notification synchronously with the runner's retry policy: (ok, attempts, detail)."""
    s = settings.alerts
    POOL.configure(settings.api.url_allowlist)
    n = test_notification(sub, key)
    try:
        channel = build(sub.channel, s)
    except PermanentSendError as exc:
        return False, 0, exc.detail
    try:
        for attempt in range(1, s.max_attempts + 1):
            try:
                return True, attempt, channel.send(n)
            except PermanentSendError as exc:
                return False, attempt, exc.detail
            except RetryableSendError as exc:
                if attempt == s.max_attempts:
                    return False, attempt, f"gave up after {attempt} attempts: {exc.detail}"
                time.sleep(min(30.0, backoff(attempt, s, exc.retry_after_s)))
    finally:
        channel.close()
    return False, s.max_attempts, "not sent"
