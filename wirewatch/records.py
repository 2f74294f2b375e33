"""The records that cross process boundaries: Article, Topic, Match, Subscription, Delivery.

Every record is a frozen pydantic model. On the wire each is a JSON object carrying a schema version field
``v`` (``"MAJOR.MINOR"``). A reader accepts any minor version of a major it knows (unknown fields are ignored,
so a newer writer may add fields) and rejects any other major with :class:`RecordError`, which consumers turn
into a dead-letter entry rather than a crash.

Change records with ``record.model_copy(update=...)``; never in place.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

SCHEMA_MAJOR = 1
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.0"
_BARE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class RecordError(ValueError):
    """A payload that cannot become a record: undecodable, wrong schema version or invalid fields."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Record(BaseModel):
    """Base of all wire records: frozen, strict about unknown enum values, lenient about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    kind: ClassVar[str] = "record"
    v: str = SCHEMA_VERSION

    @field_validator("v")
    @classmethod
    def _known_major(cls, value: str) -> str:
        major = value.split(".", 1)[0]
        if major != str(SCHEMA_MAJOR):
            raise ValueError(f"unsupported schema version {value!r} (this reader knows major {SCHEMA_MAJOR})")
        return value

    def to_json(self) -> bytes:
        """Serialize to compact UTF-8 JSON, ``v`` included."""
        return self.model_dump_json(exclude_none=False).encode()


R = TypeVar("R", bound=Record)


def decode(cls: type[R], payload: bytes | str | dict[str, Any], *, stored: bool = False) -> R:
    """Parse ``payload`` into ``cls``.

    ``stored=True`` reads a record kept from before a check was added: the checks made where records enter
    (unknown time zones, empty quiet windows, channel target shapes) are skipped, so such a record stays
    readable, can be fixed or deleted, and fails (isolated) only where it is used.

    Raises:
        RecordError: when the bytes are not JSON, the schema major version is unknown or missing,
            or a field is invalid. The message names the record kind and the first offending field.
    """
    if not isinstance(payload, dict):
        # Fast path: pydantic's own JSON parser validates in one pass (a Match with its 384-float vector in
        # ~0.024 ms against ~0.089 through json.loads). Anything it refuses, and a record without its own
        # ``v`` (the field has a default), goes the way below, which names what is wrong.
        try:
            fast = cls.model_validate_json(payload, context=_STORED if stored else None)
        except ValidationError:
            pass
        else:
            if "v" in fast.model_fields_set:
                return fast
    try:
        data = payload if isinstance(payload, dict) else json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{cls.kind}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RecordError(f"{cls.kind}: expected a JSON object, got {type(data).__name__}")
    if "v" not in data:
        raise RecordError(f"{cls.kind}: missing schema version field 'v'")
    try:
        return cls.model_validate(data, context=_STORED if stored else None)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise RecordError(f"{cls.kind}: field {loc!r}: {first['msg']}") from exc


def encode(record: Record) -> bytes:
    """Serialize a record; the inverse of :func:`decode`."""
    return record.to_json()


class Article(Record):
    """One news item, normalized by ingest. ``id`` comes from :func:`wirewatch.identity.article_id`."""

    kind: ClassVar[str] = "article"
    id: str = Field(min_length=1, max_length=128)
    url: str | None = None
    title: str
    summary: str = ""
    content: str | None = None
    published_at: datetime
    fetched_at: datetime
    published_estimated: bool = False
    """True when the feed gave no usable date and ``published_at`` is the fetch time (or was clamped)."""
    feed_url: str
    feed_id: str | None = None
    source: str = ""
    authors: tuple[str, ...] = ()
    language: str | None = None
    tags: tuple[str, ...] = ()
    update: bool = False
    """True when an already-published article came back with a changed title or summary."""

    @field_validator("published_at", "fetched_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    def text(self, content_chars: int = 600) -> str:
        """Title, summary and the lead of the content: the text classifiers embed."""
        parts = [self.title.strip(), self.summary.strip()]
        if self.content:
            lead = self.content.strip()[:content_chars]
            if lead and lead not in self.summary:
                parts.append(lead)
        return "\n".join(p for p in parts if p)


class Topic(Record):
    """What a desk wants to hear about, in plain words, examples and optional keyword rules."""

    kind: ClassVar[str] = "topic"
    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    examples: tuple[str, ...] = ()
    counter_examples: tuple[str, ...] = ()
    include_any: tuple[str, ...] = ()
    include_all: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    desk: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    """Topics that share a desk are exclusive: an article goes to the one it matches best, at most."""
    since: datetime | None = None
    """An event topic's window opens: an article published before it is not matched (None: no bound). A bare
    date means its first moment, in UTC."""
    until: datetime | None = None
    """The window closes: an article published at or after it is not matched (None: no bound). A bare date
    means the end of that day, in UTC."""
    enabled: bool = True
    version: int = Field(default=1, ge=1)
    owner: str | None = None
    updated_at: datetime | None = None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _window_bound(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and _BARE_DATE.match(value.strip()):
            value = date.fromisoformat(value.strip())
        if isinstance(value, date) and not isinstance(value, datetime):
            day = datetime(value.year, value.month, value.day, tzinfo=UTC)
            return day + timedelta(days=1) if info.field_name == "until" else day
        return value

    @field_validator("since", "until")
    @classmethod
    def _window_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _as_utc(value)

    @model_validator(mode="after")
    def _window_order(self) -> Topic:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError(f"until ({self.until.isoformat()}) must come after since ({self.since.isoformat()})")
        return self

    def in_window(self, published: datetime | None) -> bool:
        """Is an article published at ``published`` inside the topic's window? Undated articles always are."""
        if published is None:
            return True
        return (self.since is None or published >= self.since) and (self.until is None or published < self.until)


class Feed(Record):
    """A feed to poll. ``id`` is :func:`wirewatch.identity.feed_id` of the URL; ``interval_s`` None = adaptive."""

    kind: ClassVar[str] = "feed"
    id: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=1, max_length=2000)
    name: str = ""
    interval_s: float | None = Field(default=None, gt=0)
    tags: tuple[str, ...] = ()
    enabled: bool = True
    disabled_reason: str = ""
    full_text: Literal["auto", "always", "never"] | None = None
    """Fetch each entry's own page for its text: always, never, or (auto) when the summary is short; None =
    ``ingest.full_text``."""
    owner: str | None = None
    updated_at: datetime | None = None


class ModelInfo(Record):
    """Which embedding model and backend produced a score."""

    kind: ClassVar[str] = "model"
    name: str
    revision: str = ""
    backend: str = ""


class Evidence(Record):
    """Why an article matched a topic."""

    kind: ClassVar[str] = "evidence"
    closest: str = ""
    """The description or example the article was most similar to."""
    closest_kind: Literal["description", "example", "name", ""] = ""
    similarity: float = 0.0
    counter_example: str | None = None
    counter_margin: float | None = None
    """Similarity to the closest example minus similarity to the closest counter-example."""
    keywords: tuple[str, ...] = ()
    features: dict[str, float] = Field(default_factory=dict)


class Match(Record):
    """An article that passed a topic's threshold, with the evidence for it."""

    kind: ClassVar[str] = "match"
    article: Article
    topic_id: str
    topic_version: int = 1
    score: float
    threshold: float
    evidence: Evidence = Field(default_factory=Evidence)
    model: ModelInfo
    classified_at: datetime = Field(default_factory=utcnow)
    vector: tuple[float, ...] | None = None
    """The article's unit-norm embedding, so alerts can fold near-duplicates without re-embedding."""
    replay: bool = False

    @field_validator("classified_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class ChannelKind(StrEnum):
    """The channel modules alerts knows."""

    WEBHOOK = "webhook"
    SLACK = "slack"
    TEAMS = "teams"
    EMAIL = "email"
    APPRISE = "apprise"


_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
_EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


_STORED = {"stored": True}


def _entering(info: ValidationInfo) -> bool:
    """False while reading a stored record (``decode(..., stored=True)``); entry checks apply otherwise."""
    return not (isinstance(info.context, dict) and info.context.get("stored"))


def known_zone(value: str) -> str:
    """``value`` when it names an IANA time zone this host knows (``Europe/Paris``, ``UTC``).

    Raises:
        ValueError: naming the value, for anything ``ZoneInfo`` cannot load. Checked when a record is
            built, so an unknown zone is refused at the API, in ``config check`` and by the registry seed
            instead of failing later inside the alerts batch.
    """
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a key that names a directory
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name such as 'Europe/Paris')") from exc
    return value


def check_target(kind: ChannelKind, target: str) -> str:
    """``target`` when it has the shape ``kind`` needs; the SSRF guard is the API's separate, later check.

    Raises:
        ValueError: saying what the channel kind expected.
    """
    if _CONTROL.search(target) or target != target.strip():
        raise ValueError("contains control characters or surrounding whitespace")
    if kind is ChannelKind.EMAIL:
        if not all(_EMAIL.match(a.strip()) for a in target.split(",")):
            raise ValueError("expected one or more comma-separated email addresses")
    elif kind is ChannelKind.APPRISE:
        if not re.match(r"^[a-z][a-z0-9+.-]*://\S+$", target, re.I):
            raise ValueError("expected an Apprise URL (scheme://...)")
    else:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL with a host for a {kind.value} channel")
    return target


class ChannelSpec(Record):
    """Where a subscription's notifications go. ``secret`` is never logged."""

    kind: ClassVar[str] = "channel"
    type: ChannelKind
    target: str = Field(min_length=1, max_length=2000)
    secret: str | None = Field(default=None, repr=False)
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _target_fits_kind(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")  # absent when the type itself was invalid: that error is reported
        return value if kind is None or not _entering(info) else check_target(kind, value)


class DigestSpec(Record):
    """When a digest subscription is delivered."""

    kind: ClassVar[str] = "digest"
    period: Literal["hourly", "daily"] = "hourly"
    at: str = Field(default="08:00", pattern=_HHMM)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str, info: ValidationInfo) -> str:
        return known_zone(value) if _entering(info) else value


class RateLimit(Record):
    """At most ``count`` instant notifications per ``per_seconds``; overflow goes to the next digest."""

    kind: ClassVar[str] = "rate_limit"
    count: int = Field(default=20, ge=1, le=1_000_000, strict=True)
    per_seconds: int = Field(default=3600, ge=1, le=366 * 86400, strict=True)


class QuietHours(Record):
    """Local-time window during which alerts are held and sent as one digest when it ends."""

    kind: ClassVar[str] = "quiet_hours"
    start: str = Field(pattern=_HHMM)
    end: str = Field(pattern=_HHMM)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str, info: ValidationInfo) -> str:
        return known_zone(value) if _entering(info) else value

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("start") and _entering(info):
            raise ValueError(f"equals start ({value}): an empty window; leave quiet_hours out instead")
        return value


class Subscription(Record):
    """A channel subscribed to a topic, with its delivery rules.

    Every field is checked when the record is built (zones, windows, limits, channel target), so a
    subscription that would fail at run time is refused wherever it enters: API, config file, registry seed.
    """

    kind: ClassVar[str] = "subscription"
    id: str = Field(min_length=1, max_length=64)
    topic_id: str = Field(min_length=1, max_length=64)
    channel: ChannelSpec
    min_score: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    mode: Literal["instant", "digest"] = "instant"
    digest: DigestSpec | None = None
    rate_limit: RateLimit | None = None
    quiet_hours: QuietHours | None = None
    muted_until: datetime | None = None
    follow_ups: Literal["none", "material", "sources"] = "material"
    enabled: bool = True
    owner: str | None = None

    @field_validator("muted_until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # a naive time cannot be compared with the worker's aware clock; it is taken as UTC, like every record's
        return None if value is None else _as_utc(value)


class DeliveryStatus(StrEnum):
    """Outcome of one delivery decision."""

    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    QUEUED = "queued"


class Delivery(Record):
    """One line of the audit trail on ``wirewatch.deliveries``: what was sent, failed or suppressed, and why."""

    kind: ClassVar[str] = "delivery"
    id: str
    subscription_id: str
    topic_id: str = ""
    story_id: str
    article_ids: tuple[str, ...] = ()
    status: DeliveryStatus
    reason: str = ""
    attempts: int = 0
    idempotency_key: str = ""
    sent_at: datetime | None = None
    recorded_at: datetime = Field(default_factory=utcnow)
    response: str = ""
    channel: str = ""
