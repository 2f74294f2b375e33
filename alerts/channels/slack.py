"""Slack incoming webhook with Block Kit.

Feed text goes only into ``plain_text`` objects and the top-level fallback ``text``, with ``&<>`` escaped in
both (Slack parses them in the fallback, which is what notifications show): no ``<!channel>``, no
``<url|label>`` links, no mrkdwn from a headline. The one ``mrkdwn`` element carries our own link (a URL
that passed :func:`safe_url`, with ``&<>`` escaped as Slack asks). Link unfurling is off. Incoming webhooks
cannot thread replies, so follow-ups say "Update:" instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

from alerts.channels._http import JsonPoster
from alerts.channels.base import Item, Notification, clip, plain, safe_url

HEADER_LIMIT = 150
TEXT_LIMIT = 3000
FALLBACK_LIMIT = 3000
MAX_BLOCKS = 50
MAX_DIGEST_ITEMS = 15


def mrkdwn_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escaped(text: str, limit: int) -> str:
    """Feed text as one clean line, ``&<>`` escaped, at most ``limit`` characters after escaping.

    Slack parses ``&``, ``<`` and ``>`` in every text it shows, the message's top-level ``text`` included
    (a ``<!channel>`` there notifies the whole channel), so they are escaped everywhere; the cut happens
    before escaping so an entity is never split.
    """
    cut = clip(plain(text), limit)
    out = mrkdwn_escape(cut)
    while len(out) > limit:
        cut = clip(cut, max(1, len(cut) - (len(out) - limit)))
        out = mrkdwn_escape(cut)
    return out


def _pt(text: str, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    return {"type": "plain_text", "text": escaped(text, limit) or " ", "emoji": False}


def _item_blocks(item: Item, summary_limit: int) -> list[dict[str, Any]]:
    text = item.title + (f" — {item.summary}" if item.summary else "")
    blocks: list[dict[str, Any]] = [{"type": "section", "text": _pt(text, summary_limit)}]
    meta = [_pt(item.source or "unknown source", 200)]
    url = safe_url(item.url)
    if url:
        meta.append({"type": "mrkdwn", "text": f"<{mrkdwn_escape(url)}|Open article>"})
    blocks.append({"type": "context", "elements": meta})
    return blocks


def payload(n: Notification) -> dict[str, Any]:
    """The incoming-webhook JSON for ``n``."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _pt(n.heading, HEADER_LIMIT)}]
    items = n.items[:MAX_DIGEST_ITEMS] if n.kind == "digest" else n.items[:1]
    for item in items:
        blocks.extend(_item_blocks(item, 600 if n.kind == "digest" else TEXT_LIMIT))
    if n.kind == "digest" and len(n.items) > len(items):
        blocks.append({"type": "context", "elements": [_pt(f"and {len(n.items) - len(items)} more")]})
    footer = f"Topic: {n.topic_name or n.topic_id}"
    if n.kind != "digest":
        footer += f" · {n.article_count} article(s) from {len(n.sources) or 1} source(s)"
        if n.reason:
            footer += f" · {n.reason}"
    blocks.append({"type": "context", "elements": [_pt(footer, 2000)]})
    return {"text": escaped(n.heading, FALLBACK_LIMIT), "blocks": blocks[:MAX_BLOCKS],
            "unfurl_links": False, "unfurl_media": False}


class SlackChannel(JsonPoster):
    """Post to a Slack incoming-webhook URL (the URL is the secret: it is never logged)."""

    kind: ClassVar[str] = "slack"
    budget: ClassVar[int] = 1
    budget_per_s: ClassVar[float] = 1.0
    payload = staticmethod(payload)
