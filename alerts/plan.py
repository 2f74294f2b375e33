"""From folded matches to what happens per subscription.

The result is notifications to send, stories to hold and the audit records of every suppression and hold.
:func:`alerts.rules.judge` decides per (match, subscription); this module supplies what it needs from
shared state in three pipelined round trips per batch (is the story already sent, pending or held for
the subscription?), applies the rate limits, and builds the notifications with their idempotency keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import redis

from alerts.channels import Item, Notification
from alerts.channels.base import clip
from alerts.digest import DigestQueue, Held
from alerts.ledger import FIRST, NotificationLedger, idempotency_key
from alerts.outbox import Entry, Outbox
from alerts.recorder import delivery_id
from alerts.rules import Action, Decision, judge, overflow_due
from alerts.stories import Folded
from wirewatch import metrics
from wirewatch.log import describe_error, get_logger
from wirewatch.records import Delivery, DeliveryStatus, Match, Subscription
from wirewatch.settings import Settings
from wirewatch.state import RateLimiter, key

log = get_logger("alerts.plan")
FAILED = "subscription_error"
"""The suppression reason of a (match, subscription) whose rules could not be applied."""


@dataclass
class Plan:
    """What one batch leads to."""

    sends: list[Entry] = field(default_factory=list)
    holds: list[Held] = field(default_factory=list)
    records: list[Delivery] = field(default_factory=list)


def why(m: Match) -> str:
    """One line on why the article matched."""
    parts = [f"score {m.score:.2f} (threshold {m.threshold:.2f})"]
    if m.evidence.closest:
        parts.append(f"closest to “{clip(m.evidence.closest, 80)}”")
    if m.evidence.keywords:
        parts.append("keywords: " + ", ".join(m.evidence.keywords[:5]))
    return "; ".join(parts)


def notification(sub: Subscription, f: Folded, seq: str, topic_name: str) -> Notification:
    """The notification for one folded match to one subscription."""
    a = f.match.article
    item = Item(title=a.title, url=a.url, source=a.source, summary=a.summary, published_at=a.published_at,
                score=f.match.score)
    return Notification(
        key=idempotency_key(sub.id, f.story.id, seq), kind="alert" if seq == FIRST else "follow_up",
        subscription_id=sub.id, topic_id=sub.topic_id, topic_name=topic_name, story_id=f.story.id,
        items=(item,), sources=f.story.sources, article_count=f.story.article_count, reason=why(f.match),
        article_ids=(a.id,), thread_key=None if seq == FIRST else idempotency_key(sub.id, f.story.id),
    )


def _record(sub: Subscription, f: Folded, status: DeliveryStatus, reason: str) -> Delivery:
    return Delivery(id=delivery_id(), subscription_id=sub.id, topic_id=sub.topic_id, story_id=f.story.id,
                    article_ids=(f.match.article.id,), status=status, reason=reason,
                    idempotency_key=idempotency_key(sub.id, f.story.id), channel=sub.channel.type.value)


def failed(sub: Subscription, stage: str, exc: Exception) -> Decision:
    """Log and count a subscription whose ``stage`` raised; its match is suppressed (and audited), no one else's."""
    log.error("subscription_failed", subscription_id=sub.id, topic_id=sub.topic_id, stage=stage,
              error=describe_error(exc))
    metrics.ALERTS_SUBSCRIPTION_ERRORS.labels(stage).inc()
    return Decision(Action.SUPPRESS, FAILED)


def _judged(sub: Subscription, f: Folded, *, known: bool, now: datetime) -> Decision:
    try:
        return judge(sub, f, known=known, now=now)
    except Exception as exc:  # noqa: BLE001 - a bad subscription must not take the batch (its topic) down with it
        return failed(sub, "rules", exc)


class Planner:
    """Applies the rules to a folded batch against the shared ledger, outbox, held queues and rate limits."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self._s = settings
        self._r = client
        self._ledger = NotificationLedger(client, settings)
        self._outbox = Outbox(client, settings)
        self._held = DigestQueue(client, settings)
        self._rates = RateLimiter(client)

    def plan(self, folded: list[Folded], subs_by_topic: dict[str, list[Subscription]],
             topic_names: dict[str, str], now: datetime) -> Plan:
        """Decide for every (match, subscription on its topic) pair."""
        pairs = [(f, sub) for f in folded for sub in subs_by_topic.get(f.match.topic_id, ())]
        # Suppressions that do not depend on the story's history (disabled, muted, low score) need no lookup.
        early = [_judged(sub, f, known=False, now=now) for f, sub in pairs]
        ask = [i for i, d in enumerate(early) if d.action is not Action.SUPPRESS]
        known = dict(zip(ask, self._known([pairs[i] for i in ask]), strict=True))
        decided = []
        planned: set[tuple[str, str]] = set()
        for i, (f, sub) in enumerate(pairs):
            d = early[i] if i not in known else \
                _judged(sub, f, known=known[i] or (sub.id, f.story.id) in planned, now=now)
            if d.action is not Action.SUPPRESS:
                planned.add((sub.id, f.story.id))
            decided.append(d)
        decided = self._rate_limit(pairs, decided, now)
        out = Plan()
        for (f, sub), d in zip(pairs, decided, strict=True):
            if d.action is Action.SEND:
                try:
                    out.sends.append(Entry(notification(sub, f, d.seq, topic_names.get(sub.topic_id, sub.topic_id))))
                except Exception as exc:  # noqa: BLE001 - as in _judged
                    d = failed(sub, "notification", exc)
            metrics.ALERTS_DECISIONS.labels(d.action.value, d.reason).inc()
            if d.action is Action.HOLD:
                assert d.due is not None
                out.holds.append(Held(sub.id, sub.topic_id, f.story.id, d.due))
                reason = f"{d.reason}: held until {d.due.isoformat()}"
                out.records.append(_record(sub, f, DeliveryStatus.QUEUED, reason))
            elif d.action is Action.SUPPRESS:
                out.records.append(_record(sub, f, DeliveryStatus.SUPPRESSED, d.reason))
        return out

    def _rate_limit(self, pairs: list[tuple[Folded, Subscription]], decided: list[Decision],
                    now: datetime) -> list[Decision]:
        """Sends over a subscription's rate limit: a first alert waits for the next digest, a follow-up is dropped.

        One round trip for the batch; each slot is named after its notification, so a retried batch
        asks for the same slots again instead of spending the limit twice.
        """
        ask: list[int] = []
        slots: list[tuple[str, int, float, str | None]] = []
        for i, ((f, sub), d) in enumerate(zip(pairs, decided, strict=True)):
            if d.action is Action.SEND and (rl := sub.rate_limit) is not None:
                ask.append(i)
                slots.append((key(self._s, "alerts", "rate", sub.id), rl.count, rl.per_seconds,
                              idempotency_key(sub.id, f.story.id, d.seq)))
        answers = self._rates.allow_many(slots)
        out = list(decided)
        for i, (ok, wait) in zip(ask, answers, strict=True):
            if ok:
                continue
            sub = pairs[i][1]
            if decided[i].seq != FIRST:
                out[i] = Decision(Action.SUPPRESS, "rate_limited_follow_up")
                continue
            try:
                out[i] = Decision(Action.HOLD, "rate_limited", due=overflow_due(sub, now, wait))
            except Exception as exc:  # noqa: BLE001 - as in _judged
                out[i] = failed(sub, "rate_limit", exc)
        return out

    def _known(self, pairs: list[tuple[Folded, Subscription]]) -> list[bool]:
        """Per pair: does the subscription already have the story (sent, claimed, pending or held)?"""
        if not pairs:
            return []
        firsts = [idempotency_key(sub.id, f.story.id) for f, sub in pairs]
        pipe = self._r.pipeline(transaction=False)  # one round trip for the three questions
        self._ledger.queue_states(pipe, firsts)
        self._outbox.queue_exists(pipe, firsts)
        self._held.queue_contains(pipe, [(sub.id, sub.topic_id, f.story.id) for f, sub in pairs])
        replies = pipe.execute()
        n = len(pairs)
        states = self._ledger.parse_states(replies[0])
        pending, held = replies[1:1 + n], replies[1 + n:]
        return [st is not None or bool(p) or h is not None for st, p, h in zip(states, pending, held, strict=True)]
