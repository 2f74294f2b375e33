"""Subscription rules: whether a folded match goes out now, is held for a digest, or is suppressed.

:func:`judge` is pure (a subscription, a folded match, what is already known about the story for this
subscription, the time) and answers one :class:`Decision`; the planner in :mod:`alerts.plan` adds the
shared-state checks (ledger, rate limit). In order:

1. disabled subscription, muted topic (``muted_until``), score below ``min_score``: suppressed;
2. a story this subscription already has (sent, pending or held): suppressed, unless the subscription
   wants follow-ups and this article is a material development (``follow_ups="material"``) or the story
   just reached a source milestone (``"sources"``);
3. inside quiet hours: held until they end, then delivered as one digest;
4. digest mode: held until the next digest time (hourly, or daily at a time in the subscription's zone);
5. otherwise sent now, if the rate limit allows; overflow is held for the next digest, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from alerts.ledger import FIRST
from alerts.stories import Folded
from wirewatch.records import DigestSpec, QuietHours, Subscription


class Action(StrEnum):
    """What happens to one (match, subscription)."""

    SEND = "send"
    HOLD = "hold"
    SUPPRESS = "suppress"


@dataclass(frozen=True)
class Decision:
    """A rule decision. ``seq`` names the notification (first alert or which follow-up)."""

    action: Action
    reason: str
    seq: str = FIRST
    due: datetime | None = None


def _hm(value: str) -> time:
    h, m = value.split(":")
    return time(int(h), int(m))


def quiet_until(q: QuietHours | None, now: datetime) -> datetime | None:
    """When ``now`` falls in the quiet hours, the (UTC) time they end; else None. Spans midnight fine."""
    if q is None:
        return None
    tz = ZoneInfo(q.timezone)
    local = now.astimezone(tz)
    start, end = _hm(q.start), _hm(q.end)
    t = local.time()
    if start == end:
        return None
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(end_day, end, tzinfo=tz).astimezone(UTC)


def next_digest(spec: DigestSpec | None, now: datetime) -> datetime:
    """The next digest time after ``now``: the next full hour, or the next ``at`` in the spec's zone."""
    spec = spec or DigestSpec()
    tz = ZoneInfo(spec.timezone)
    local = now.astimezone(tz)
    if spec.period == "hourly":
        return (local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).astimezone(UTC)
    at = datetime.combine(local.date(), _hm(spec.at), tzinfo=tz)
    if at <= local:
        at = datetime.combine(local.date() + timedelta(days=1), _hm(spec.at), tzinfo=tz)
    return at.astimezone(UTC)


def hold_until(sub: Subscription, now: datetime) -> datetime:
    """When a digest of what this subscription holds goes out: the next digest time, out of quiet hours."""
    due = next_digest(sub.digest, now)
    end = quiet_until(sub.quiet_hours, due)
    return end or due


def judge(sub: Subscription, f: Folded, *, known: bool, now: datetime) -> Decision:
    """Decide for one folded match and one subscription on its topic; see the module docstring."""
    if not sub.enabled:
        return Decision(Action.SUPPRESS, "subscription_disabled")
    if sub.muted_until is not None and now < sub.muted_until:
        return Decision(Action.SUPPRESS, "muted")
    if f.match.score < sub.min_score:
        return Decision(Action.SUPPRESS, "below_min_score")
    seq = FIRST
    if known:
        if sub.mode == "digest":
            return Decision(Action.SUPPRESS, "story_already_held")
        if sub.follow_ups == "material" and f.material:
            seq = f"update:{f.match.article.id}"
        elif sub.follow_ups == "sources" and f.milestone:
            seq = f"sources:{f.milestone}"
        else:
            return Decision(Action.SUPPRESS, "story_already_alerted")
    quiet_end = quiet_until(sub.quiet_hours, now)
    if quiet_end is not None:
        if seq != FIRST:
            return Decision(Action.SUPPRESS, "follow_up_in_quiet_hours")
        return Decision(Action.HOLD, "quiet_hours", due=quiet_end)
    if sub.mode == "digest":
        return Decision(Action.HOLD, "digest", due=hold_until(sub, now))
    return Decision(Action.SEND, "follow_up" if seq != FIRST else "new_story", seq=seq)


def overflow_due(sub: Subscription, now: datetime, wait_s: float) -> datetime:
    """When rate-limit overflow goes out.

    The subscription's next digest if it has a digest spec, else as soon as the window frees a slot.
    """
    if sub.digest is not None:
        return hold_until(sub, now)
    due = now + timedelta(seconds=max(1.0, wait_s))
    return quiet_until(sub.quiet_hours, due) or due
