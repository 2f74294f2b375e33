"""What every channel shares: the Notification it renders, the Channel protocol, the typed send errors.

A channel turns one :class:`Notification` into one request to one destination. It decides nothing about
retries: it raises :class:`RetryableSendError` (timeouts, 5xx, 429, connection failures; with the
server's Retry-After when given) or :class:`PermanentSendError` (other 4xx, a refused address, a bad
target), and the delivery runner decides what happens next.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from wirewatch.records import ChannelSpec, utcnow
from wirewatch.settings import AlertsSettings


class SendError(Exception):
    """A send did not reach the destination. ``detail`` is safe to log (no secrets)."""

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class RetryableSendError(SendError):
    """Worth trying again later: timeout, connection failure, 5xx, 429. ``retry_after_s`` from the server."""

    def __init__(self, detail: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(detail, status=status)
        self.retry_after_s = retry_after_s


class PermanentSendError(SendError):
    """Will fail the same way again (4xx other than 429, bad target): not retried."""


class Item(BaseModel):
    """One article as a notification shows it."""

    model_config = ConfigDict(frozen=True)

    title: str
    url: str | None = None
    source: str = ""
    summary: str = ""
    published_at: datetime | None = None
    score: float | None = None


class Notification(BaseModel):
    """One message to one subscription. ``key`` is the idempotency key receivers may de-duplicate on."""

    model_config = ConfigDict(frozen=True)

    key: str
    kind: Literal["alert", "follow_up", "digest", "test"] = "alert"
    subscription_id: str
    topic_id: str
    topic_name: str = ""
    story_id: str = ""
    items: tuple[Item, ...]
    sources: tuple[str, ...] = ()
    article_count: int = 1
    reason: str = ""
    article_ids: tuple[str, ...] = ()
    story_ids: tuple[str, ...] = ()
    """For a digest: every story it carries (each one's ledger key is marked sent with it)."""
    thread_key: str | None = None
    """The key of the story's first alert, so channels that can thread a follow-up do."""
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def heading(self) -> str:
        """A one-line heading: the lead title, or the digest's summary line."""
        if self.kind == "digest":
            return f"{len(self.items)} stories on {self.topic_name or self.topic_id}"
        prefix = {"test": "[TEST] ", "follow_up": "Update: "}.get(self.kind, "")
        return prefix + self.items[0].title


class Channel(Protocol):
    """A destination for notifications, built from a subscription's :class:`ChannelSpec`.

    ``send(n)`` delivers ``n`` once and returns a short summary of the destination's answer (status,
    id); it returns only after the destination acknowledged. It raises :class:`RetryableSendError` when a
    later try may succeed and :class:`PermanentSendError` when it cannot; it never retries by itself and
    never blocks longer than its timeout. Class attributes state the channel's limits: ``budget`` sends per
    ``budget_per_s`` seconds per destination (the runner enforces them). Secrets never appear in messages.
    """

    kind: ClassVar[str]
    budget: ClassVar[int]
    budget_per_s: ClassVar[float]

    def __init__(self, spec: ChannelSpec, settings: AlertsSettings) -> None:
        """Build from the subscription's channel spec; raise PermanentSendError for an unusable target."""

    def send(self, n: Notification) -> str:
        """Deliver ``n``; see the class docstring."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"\s+")


def plain(text: str | None) -> str:
    """Feed text reduced to one clean line: control and bidi characters dropped, whitespace collapsed."""
    if not text:
        return ""
    return _SPACE.sub(" ", _CONTROL.sub("", unicodedata.normalize("NFC", text))).strip()


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """Cut ``text`` to at most ``limit`` characters, at a word boundary when one is near, marking the cut."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(ellipsis))]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip() + ellipsis


def safe_url(url: str | None) -> str | None:
    """The article link if it is plain http(s) without spaces or markup characters, else None."""
    if not url or not re.match(r"^https?://[^\s<>\"'|`]+$", url):
        return None
    return url


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret (and URL credentials or webhook tokens in paths) masked."""
    out = text
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", out)


def target_label(spec: ChannelSpec) -> str:
    """A log-safe name for a destination: scheme and host only, never path tokens or credentials."""
    m = re.match(r"^([a-z][a-z0-9+.-]*)://(?:[^/@]*@)?([^/:?#]+)", spec.target, re.I)
    if m:
        return f"{spec.type.value}:{m.group(1)}://{m.group(2)}"
    if spec.type.value == "email":
        return f"email:{spec.target.split('@')[-1][:40]}"
    return spec.type.value
