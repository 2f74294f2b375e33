"""Microsoft Teams through a Workflows (Power Automate) webhook carrying an Adaptive Card.

The retired Office 365 connector format is not used. Feed text is placed in TextBlocks with Markdown
control characters backslash-escaped and angle brackets replaced, so a headline cannot add links,
emphasis or HTML; the only link is our own ``Action.OpenUrl`` to a URL that passed :func:`safe_url`.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from alerts.channels._http import JsonPoster
from alerts.channels.base import Notification, clip, plain, safe_url

TITLE_LIMIT = 300
TEXT_LIMIT = 1500
MAX_DIGEST_ITEMS = 20
MAX_BYTES = 27 * 1024  # Teams rejects messages over ~28 KB
_MD = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(text: str) -> str:
    """Neutralize Markdown and HTML in feed text for an Adaptive Card TextBlock."""
    return _MD.sub(r"\\\1", text.replace("<", "‹").replace(">", "›").replace("&", "&amp;"))


def _text(text: str, limit: int, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": md_escape(clip(plain(text), limit)), "wrap": True, **style}


def card(n: Notification, *, max_items: int = MAX_DIGEST_ITEMS) -> dict[str, Any]:
    """The Adaptive Card (schema 1.4) for ``n``."""
    body: list[dict[str, Any]] = [_text(n.heading, TITLE_LIMIT, size="Medium", weight="Bolder")]
    actions: list[dict[str, Any]] = []
    items = n.items[:max_items] if n.kind == "digest" else n.items[:1]
    for item in items:
        if n.kind == "digest":
            body.append(_text(item.title, TITLE_LIMIT, weight="Bolder", spacing="Medium"))
        if item.summary:
            body.append(_text(item.summary, TEXT_LIMIT if n.kind != "digest" else 400))
        body.append(_text(item.source or "unknown source", 200, isSubtle=True, spacing="None"))
        url = safe_url(item.url)
        if url and len(actions) < 5:
            label = clip(f"Open: {plain(item.source) or 'article'}", 60)
            actions.append({"type": "Action.OpenUrl", "title": label, "url": url})
    if n.kind == "digest" and len(n.items) > len(items):
        body.append(_text(f"and {len(n.items) - len(items)} more", 100, isSubtle=True))
    facts = [{"title": "Topic", "value": md_escape(plain(n.topic_name or n.topic_id))}]
    if n.kind != "digest":
        facts.append({"title": "Sources", "value": str(len(n.sources) or 1)})
        if n.reason:
            facts.append({"title": "Why", "value": md_escape(clip(plain(n.reason), 300))})
    body.append({"type": "FactSet", "facts": facts})
    return {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "body": body, "actions": actions}


def payload(n: Notification) -> dict[str, Any]:
    """The workflow webhook message, shrunk (fewer digest items) until it fits Teams' size limit."""
    max_items = MAX_DIGEST_ITEMS
    while True:
        msg = {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
             "content": card(n, max_items=max_items)}]}
        if len(json.dumps(msg).encode()) <= MAX_BYTES or max_items <= 1:
            return msg
        max_items //= 2


class TeamsChannel(JsonPoster):
    """Post an Adaptive Card to a Teams Workflows webhook URL (the URL carries a signature: never logged)."""

    kind: ClassVar[str] = "teams"
    budget: ClassVar[int] = 4
    budget_per_s: ClassVar[float] = 1.0
    payload = staticmethod(payload)
