"""Subscription rules as data-driven timelines: each case carries its own expectation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.ledger import FIRST, idempotency_key
from alerts.rules import Action, hold_until, judge, next_digest, overflow_due, quiet_until
from alerts.stories import Folded, Story
from tests.integration.alerts_support import match
from wirewatch.records import ChannelKind, ChannelSpec, DigestSpec, QuietHours, Subscription

T0 = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)  # a Tuesday, 13:30 in Berlin, 08:30 in New York
SEVEN = datetime(2026, 3, 11, 7, 0, tzinfo=UTC)


def sub(**kw: Any) -> Subscription:
    return Subscription(id="s", topic_id="syria", channel=ChannelSpec(type=ChannelKind.WEBHOOK, target="https://x/h"),
                        **kw)


def folded(score: float = 0.9, *, material: bool = False, milestone: int | None = None) -> Folded:
    m = match("a1", "Title", score=score)
    story = Story(id="st", topic_id="syria", title="Title", url=None, summary="", first_article_id="a1",
                  article_ids=("a1",), sources=("x",), article_count=1, created_at=T0, updated_at=T0)
    return Folded(m, story, new_story=False, material=material, milestone=milestone)


@pytest.mark.parametrize(("subscription", "f", "known", "want"), [
    (sub(), folded(), False, (Action.SEND, "new_story")),
    (sub(enabled=False), folded(), False, (Action.SUPPRESS, "subscription_disabled")),
    (sub(muted_until=T0 + timedelta(hours=1)), folded(), False, (Action.SUPPRESS, "muted")),
    (sub(muted_until=T0 - timedelta(seconds=1)), folded(), False, (Action.SEND, "new_story")),
    (sub(min_score=0.95), folded(0.9), False, (Action.SUPPRESS, "below_min_score")),
    (sub(), folded(), True, (Action.SUPPRESS, "story_already_alerted")),
    (sub(follow_ups="material"), folded(material=True), True, (Action.SEND, "follow_up")),
    (sub(follow_ups="none"), folded(material=True), True, (Action.SUPPRESS, "story_already_alerted")),
    (sub(follow_ups="sources"), folded(milestone=3), True, (Action.SEND, "follow_up")),
    (sub(follow_ups="sources"), folded(material=True), True, (Action.SUPPRESS, "story_already_alerted")),
    (sub(mode="digest"), folded(), False, (Action.HOLD, "digest")),
    (sub(mode="digest"), folded(material=True), True, (Action.SUPPRESS, "story_already_held")),
    (sub(quiet_hours=QuietHours(start="12:00", end="13:00")), folded(), False, (Action.HOLD, "quiet_hours")),
    (sub(quiet_hours=QuietHours(start="12:00", end="13:00")), folded(material=True), True,
     (Action.SUPPRESS, "follow_up_in_quiet_hours")),
    (sub(quiet_hours=QuietHours(start="13:00", end="14:00")), folded(), False, (Action.SEND, "new_story")),
])
def test_judge(subscription: Subscription, f: Folded, known: bool, want: tuple[Action, str]) -> None:
    d = judge(subscription, f, known=known, now=T0)
    assert (d.action, d.reason) == want


def test_follow_up_keys_differ_from_the_first_alert_and_are_stable() -> None:
    d = judge(sub(follow_ups="material"), folded(material=True), known=True, now=T0)
    assert d.seq != FIRST and d.seq == "update:a1"
    assert idempotency_key("s", "st", d.seq) != idempotency_key("s", "st")
    assert idempotency_key("s", "st") == idempotency_key("s", "st", FIRST)


@pytest.mark.parametrize(("q", "now", "want"), [
    (QuietHours(start="22:00", end="07:00"), datetime(2026, 3, 10, 23, 0, tzinfo=UTC), SEVEN),
    (QuietHours(start="22:00", end="07:00"), datetime(2026, 3, 11, 6, 59, tzinfo=UTC), SEVEN),
    (QuietHours(start="22:00", end="07:00"), datetime(2026, 3, 11, 7, 0, tzinfo=UTC), None),
    (QuietHours(start="22:00", end="07:00"), datetime(2026, 3, 10, 12, 0, tzinfo=UTC), None),
    (QuietHours(start="09:00", end="17:00", timezone="America/New_York"), T0 + timedelta(hours=2),
     datetime(2026, 3, 10, 21, 0, tzinfo=UTC)),  # 17:00 EDT (DST began 8 March)
    # refused when built now; one stored before that check still reads as no quiet hours at all
    (QuietHours.model_construct(start="09:00", end="09:00", timezone="UTC"), T0, None),
])
def test_quiet_until(q: QuietHours, now: datetime, want: datetime | None) -> None:
    assert quiet_until(q, now) == want


@pytest.mark.parametrize(("spec", "want"), [
    (DigestSpec(period="hourly"), datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),
    (DigestSpec(period="daily", at="08:00", timezone="Europe/Berlin"), datetime(2026, 3, 11, 7, 0, tzinfo=UTC)),
    (DigestSpec(period="daily", at="14:00", timezone="Europe/Berlin"), datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),
    (DigestSpec(period="hourly", timezone="Asia/Kolkata"), T0 + timedelta(hours=1)),  # 18:00 IST -> 19:00
])
def test_next_digest(spec: DigestSpec, want: datetime) -> None:
    assert next_digest(spec, T0) == want


def test_digest_falling_in_quiet_hours_waits_for_their_end() -> None:
    s = sub(mode="digest", digest=DigestSpec(period="daily", at="06:00"),
            quiet_hours=QuietHours(start="22:00", end="07:00"))
    assert hold_until(s, T0) == datetime(2026, 3, 11, 7, 0, tzinfo=UTC)


def test_rate_limit_overflow_goes_to_the_next_digest_or_the_window_end() -> None:
    assert overflow_due(sub(digest=DigestSpec(period="hourly")), T0, 50) == datetime(2026, 3, 10, 13, 0, tzinfo=UTC)
    assert overflow_due(sub(), T0, 50) == T0 + timedelta(seconds=50)
