"""The idempotency ledger: at most one notification per (subscription, story) across crashes and workers.

Protocol per notification, on :class:`wirewatch.state.Ledger`:

1. ``claim(key, owner, lease)`` before sending: only one process may send at a time; a claim by a
   process that died expires after the lease, and then someone else may claim and send.
2. send; the channel acknowledges.
3. ``done(key)``: final; every later claim of the key returns False for ``ledger_ttl_s``.

A kill -9 between 2 and 3 is the only window in which a notification can go out twice, and then it
carries the same idempotency key, so the receiver can drop the repeat.

Keys: the first alert of a story to a subscription is ``seq="first"``; follow-ups and digests have their
own ``seq``, so they never collide with the first alert, and a digest marks each of its stories' first
keys done with it (a story that went out in a digest never alerts instantly afterwards, and vice versa).
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis

from wirewatch.settings import Settings
from wirewatch.state import Ledger, key

FIRST = "first"


def idempotency_key(subscription_id: str, story_id: str, seq: str = FIRST) -> str:
    """The idempotency key of one notification: stable across processes and restarts."""
    raw = f"{subscription_id}\x1f{story_id}\x1f{seq}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class NotificationLedger:
    """:class:`wirewatch.state.Ledger` under the alerts namespace, with batch reads."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._s = settings
        self._ledger = Ledger(client, settings.alerts.ledger_ttl_s)
        self.lease_s = settings.alerts.claim_lease_s

    def _k(self, idem: str) -> str:
        return key(self._s, "alerts", "sent", idem)

    def claim(self, idem: str, owner: str) -> bool:
        """True when the caller may send ``idem`` now (not sent, not claimed by a live other owner)."""
        return self._ledger.claim(self._k(idem), owner, self.lease_s)

    def queue_claim(self, pipe: redis.client.Pipeline, idem: str, owner: str) -> None:
        """:meth:`claim` as one command of ``pipe`` (its reply's first element is 1 when taken)."""
        self._ledger.queue_claim(pipe, self._k(idem), owner, self.lease_s)

    def done(self, idems: list[str], detail: str = "") -> None:
        """Mark sent (the notification's own key and any first-alert keys it carries) in one round trip."""
        self.done_many([(idems, detail)])

    def done_many(self, groups: list[tuple[list[str], str]]) -> None:
        """:meth:`done` for several notifications (keys, detail) in one round trip."""
        if not groups:
            return
        pipe = self._r.pipeline(transaction=False)
        for idems, detail in groups:
            for idem in idems:
                pipe.set(self._k(idem), f"done:{detail}", px=self._s.alerts.ledger_ttl_s * 1000)
        pipe.execute()

    def release(self, idem: str, owner: str) -> None:
        """Give a claim back after a failed attempt, so the next try (anyone's) may claim at once."""
        self._ledger.release(self._k(idem), owner)

    def states(self, idems: list[str]) -> list[str | None]:
        """Per key: ``"done"``, ``"claimed"`` or None (never claimed, or released)."""
        if not idems:
            return []
        return self.parse_states(self._r.mget([self._k(i) for i in idems]))

    def queue_states(self, pipe: redis.client.Pipeline, idems: list[str]) -> None:
        """:meth:`states` as one command of ``pipe`` (non-empty ``idems``); :meth:`parse_states` reads its reply."""
        pipe.mget([self._k(i) for i in idems])

    @staticmethod
    def parse_states(raws: list[Any]) -> list[str | None]:
        """Per raw ledger value: ``"done"``, ``"claimed"`` or None."""
        return [None if raw is None else "done" if isinstance(raw, bytes) and raw.startswith(b"done:") else "claimed"
                for raw in raws]
