"""Generic webhook: a JSON body, signed with HMAC-SHA256 when the subscription has a secret.

Headers: ``Idempotency-Key`` (the same for every attempt of one notification: receivers drop repeats on
it), ``X-Wirewatch-Timestamp`` (unix seconds) and ``X-Wirewatch-Signature: sha256=<hex>`` over
``b"<timestamp>." + body`` (the Stripe/Slack scheme, so a captured body cannot be replayed with a new date).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, ClassVar

from alerts.channels._http import Poster
from alerts.channels.base import Notification, clip, plain, safe_url, target_label
from wirewatch.records import ChannelSpec
from wirewatch.settings import AlertsSettings

SIGNATURE_HEADER = "X-Wirewatch-Signature"
TIMESTAMP_HEADER = "X-Wirewatch-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300.0) -> bool:
    """True when ``signature`` matches and ``timestamp`` is within ``tolerance_s`` of now (for receivers)."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def payload(n: Notification, *, title_limit: int = 500, summary_limit: int = 2000) -> dict[str, Any]:
    """The JSON document a webhook receives."""
    return {
        "v": "1.0",
        "kind": n.kind,
        "idempotency_key": n.key,
        "subscription_id": n.subscription_id,
        "topic_id": n.topic_id,
        "topic_name": plain(n.topic_name),
        "story_id": n.story_id,
        "story_ids": list(n.story_ids),
        "thread_key": n.thread_key,
        "heading": clip(plain(n.heading), title_limit),
        "article_count": n.article_count,
        "sources": [clip(plain(s), 200) for s in n.sources[:50]],
        "reason": clip(plain(n.reason), 500),
        "items": [
            {"title": clip(plain(i.title), title_limit), "url": safe_url(i.url),
             "source": clip(plain(i.source), 200), "summary": clip(plain(i.summary), summary_limit),
             "score": i.score,
             "published_at": i.published_at.isoformat() if i.published_at else None}
            for i in n.items[:100]
        ],
        "created_at": n.created_at.isoformat(),
    }


class WebhookChannel:
    """POST JSON to any HTTPS endpoint. ``spec.secret`` signs; without one no signature header is sent."""

    kind: ClassVar[str] = "webhook"
    budget: ClassVar[int] = 50
    budget_per_s: ClassVar[float] = 1.0

    def __init__(self, spec: ChannelSpec, settings: AlertsSettings) -> None:
        self._secret = spec.secret
        self._poster = Poster(spec.target, settings.send_timeout_s, label=target_label(spec))

    def send(self, n: Notification) -> str:
        """POST the notification once; see :class:`alerts.channels.base.Channel`."""
        body = json.dumps(payload(n), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": n.key}
        if self._secret:
            ts = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = sign(self._secret, ts, body)
        return self._poster.post(body, headers)

    def close(self) -> None:
        """Close the connection pool."""
        self._poster.close()
