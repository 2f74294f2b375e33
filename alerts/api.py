"""Alerts routes under ``/v1``: subscriptions (CRUD and a test send), stories, and the delivery audit trail.

Subscriptions are owned records: a subscriber key sees and changes its own (others answer 404), an admin
all of them. Channel targets are checked before they are stored (webhook, Slack and Teams URLs pass the
SSRF guard with ``api.url_allowlist``; email targets must be plain addresses; Apprise URLs, which can
reach anything, only from admin keys). Secrets never come back: ``channel.secret`` reads ``"***"`` and
webhook-style URLs, whose path is the credential for Slack and Teams, come back as scheme and host only.
Running alert workers pick every change up within seconds (registry hot reload).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.ledger import idempotency_key
from alerts.recorder import RecentDeliveries
from alerts.stories import Story, StoryFolder
from alerts.testsend import send_now
from wirewatch import etag, netguard
from wirewatch import registry as regmod
from wirewatch.auth import ApiContext, ApiKey, CurrentKey, check_cap, ensure_owner, get_context, owned_count, visible
from wirewatch.records import (
    ChannelKind,
    Delivery,
    DigestSpec,
    QuietHours,
    RateLimit,
    Subscription,
)

Ctx = Annotated[ApiContext, Depends(get_context)]
SubId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
_EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")
_URL_KINDS = (ChannelKind.WEBHOOK, ChannelKind.SLACK, ChannelKind.TEAMS)


class ChannelIn(BaseModel):
    """Where notifications go."""

    model_config = ConfigDict(extra="forbid")

    type: ChannelKind
    target: str = Field(min_length=1, max_length=2000)
    secret: str | None = Field(default=None, max_length=500)
    options: dict[str, str] = Field(default_factory=dict, max_length=20)


class SubscriptionIn(BaseModel):
    """A subscription as a client creates it; ``owner`` is set here, ``id`` is generated when omitted."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    topic_id: str = Field(min_length=1, max_length=64)
    channel: ChannelIn
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    mode: str = Field(default="instant", pattern="^(instant|digest)$")
    digest: DigestSpec | None = None
    rate_limit: RateLimit | None = None
    quiet_hours: QuietHours | None = None
    muted_until: str | None = None
    follow_ups: str = Field(default="material", pattern="^(none|material|sources)$")
    enabled: bool = True


class SubscriptionPatch(BaseModel):
    """Fields a client may change (omitted ones stay; ``null`` clears the optional ones)."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelIn | None = None
    min_score: float | None = Field(default=None, ge=0.0, le=1.0)
    mode: str | None = Field(default=None, pattern="^(instant|digest)$")
    digest: DigestSpec | None = None
    rate_limit: RateLimit | None = None
    quiet_hours: QuietHours | None = None
    muted_until: str | None = None
    follow_ups: str | None = Field(default=None, pattern="^(none|material|sources)$")
    enabled: bool | None = None


def masked(sub: Subscription) -> dict[str, Any]:
    """A subscription as the API shows it: no secret, no credential-bearing URL path."""
    data = sub.model_dump(mode="json")
    ch = data["channel"]
    if ch.get("secret"):
        ch["secret"] = "***"
    if sub.channel.type in (*_URL_KINDS, ChannelKind.APPRISE):
        m = re.match(r"^([a-z][a-z0-9+.-]*://)(?:[^/@]*@)?([^/?#]*)", ch["target"], re.I)
        ch["target"] = f"{m.group(1)}{m.group(2)}/***" if m else "***"
    return data


def _check_channel(ctx: ApiContext, api_key: ApiKey, ch: ChannelIn) -> None:
    if ch.type in _URL_KINDS:
        try:
            netguard.check_url(ch.target, ctx.settings.api.url_allowlist, field="channel.target")
        except netguard.UnsafeURLError as exc:
            raise HTTPException(422, str(exc)) from exc
    elif ch.type is ChannelKind.EMAIL:
        if not all(_EMAIL.match(a.strip()) for a in ch.target.split(",")):
            raise HTTPException(422, "channel.target: expected one or more comma-separated email addresses")
    elif ch.type is ChannelKind.APPRISE and not api_key.is_admin:
        raise HTTPException(403, "channel.type apprise: only admin keys may create Apprise channels")


def _registry(ctx: ApiContext) -> regmod.Registry[Subscription]:
    return regmod.subscriptions(ctx.redis, ctx.settings)


def _build(data: dict[str, Any]) -> Subscription:
    try:
        return Subscription.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise HTTPException(422, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc


def _story_json(s: Story) -> dict[str, Any]:
    return {"id": s.id, "topic_id": s.topic_id, "title": s.title, "url": s.url, "summary": s.summary,
            "article_count": s.article_count, "sources": list(s.sources), "first_seen_at": s.created_at.isoformat(),
            "updated_at": s.updated_at.isoformat(), "articles": list(s.articles)}


def router() -> APIRouter:
    """The alerts routes."""
    r = APIRouter(prefix="/v1", tags=["alerts"])

    @r.get("/subscriptions")
    def list_subscriptions(api_key: CurrentKey, ctx: Ctx) -> list[dict[str, Any]]:
        """The caller's subscriptions (all, for admin)."""
        return [masked(s) for s in visible(api_key, _registry(ctx).all())]

    @r.post("/subscriptions", status_code=201)
    def create_subscription(body: SubscriptionIn, api_key: CurrentKey, ctx: Ctx) -> dict[str, Any]:
        """Subscribe a channel to a topic; 409 when the id is taken, 422 for an unknown topic or unsafe target."""
        reg = _registry(ctx)
        _check_channel(ctx, api_key, body.channel)
        if regmod.topics(ctx.redis, ctx.settings).get(body.topic_id) is None and \
                body.topic_id not in {t.id for t in ctx.settings.classify.topics}:
            raise HTTPException(422, f"topic_id: no topic {body.topic_id!r}")
        check_cap(api_key, "subscriptions", owned_count(api_key, reg.all()))
        data = body.model_dump(mode="json") | {"id": body.id or uuid.uuid4().hex[:12], "owner": api_key.id}
        sub = _build(data)
        if not reg.put_if_absent(sub):
            raise HTTPException(409, f"subscription {sub.id} already exists")
        return masked(sub)

    @r.get("/subscriptions/{sid}")
    def get_subscription(sid: SubId, api_key: CurrentKey, ctx: Ctx, response: Response) -> dict[str, Any]:
        """One subscription, with its ETag; 404 when unknown or not the caller's."""
        got = _registry(ctx).get_versioned(sid)
        ensure_owner(api_key, got and got[0], "subscription")
        assert got is not None
        etag.tag(response, got[1])
        return masked(got[0])

    @r.patch("/subscriptions/{sid}", responses={412: {"description": "If-Match is not the current ETag"}})
    def change_subscription(sid: SubId, body: SubscriptionPatch, api_key: CurrentKey, ctx: Ctx, response: Response,
                            if_match: etag.IfMatch = None) -> dict[str, Any]:
        """Change a subscription the caller owns; a channel change is checked like a new one.

        With ``If-Match`` (the ETag of a read) the change applies only if nobody changed it since: else 412.
        """
        reg = _registry(ctx)
        ensure_owner(api_key, reg.get(sid), "subscription")  # a stranger learns nothing from the checks below
        changes = body.model_dump(mode="json", exclude_unset=True)
        if body.channel is not None:
            _check_channel(ctx, api_key, body.channel)
        elif "channel" in changes:
            raise HTTPException(422, "channel: cannot be null")

        def change(sub: Subscription) -> Subscription:
            ensure_owner(api_key, sub, "subscription")
            return _build(sub.model_dump(mode="json") | changes)

        done = reg.update(sid, change, expect=etag.expected(if_match))
        ensure_owner(api_key, done and done[0], "subscription")
        assert done is not None
        etag.tag(response, done[1])
        return masked(done[0])

    @r.delete("/subscriptions/{sid}", status_code=204)
    def delete_subscription(sid: SubId, api_key: CurrentKey, ctx: Ctx) -> Response:
        """Remove a subscription the caller owns."""
        reg = _registry(ctx)
        ensure_owner(api_key, reg.get(sid), "subscription")
        reg.delete(sid)
        return Response(status_code=204)

    @r.post("/subscriptions/{sid}/test")
    def test_subscription(sid: SubId, api_key: CurrentKey, ctx: Ctx) -> dict[str, Any]:
        """Send a clearly marked test notification now (two attempts at most); 502 when the channel failed."""
        sub = _registry(ctx).get(sid)
        ensure_owner(api_key, sub, "subscription")
        assert sub is not None
        quick = ctx.settings.model_copy(update={"alerts": ctx.settings.alerts.model_copy(
            update={"max_attempts": 2, "send_timeout_s": min(5.0, ctx.settings.alerts.send_timeout_s)})})
        ok, attempts, detail = send_now(quick, sub, idempotency_key(sub.id, "test", uuid.uuid4().hex))
        if not ok:
            raise HTTPException(502, f"test notification failed after {attempts} attempt(s): {detail}")
        return {"ok": True, "attempts": attempts, "response": detail}

    @r.get("/stories")
    def list_stories(api_key: CurrentKey, ctx: Ctx, topic: Annotated[str, Query(min_length=1, max_length=64)],
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        """A topic's stories (folded near-duplicates), most recently updated first."""
        return [_story_json(s) for s in StoryFolder(ctx.redis, ctx.settings).list(topic, limit)]

    @r.get("/stories/{story_id}")
    def get_story(story_id: Annotated[str, Path(min_length=1, max_length=64)], api_key: CurrentKey,
                  ctx: Ctx) -> dict[str, Any]:
        """One story with its articles and sources; 404 when unknown or past the folding window."""
        story = StoryFolder(ctx.redis, ctx.settings).find(story_id)
        if story is None:
            raise HTTPException(404, "story not found")
        return _story_json(story)

    @r.get("/deliveries", response_model=list[Delivery])
    def list_deliveries(api_key: CurrentKey, ctx: Ctx,
                        subscription: Annotated[str | None, Query(max_length=64)] = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Delivery]:
        """The newest audit records (sent, failed, suppressed, queued, with why), the caller's only."""
        mine = {s.id for s in visible(api_key, _registry(ctx).all())}
        wanted = mine if subscription is None else ({subscription} & mine)
        if api_key.is_admin and subscription is None:
            return RecentDeliveries(ctx.redis, ctx.settings).list(limit)
        if api_key.is_admin and subscription is not None:
            wanted = {subscription}
        return RecentDeliveries(ctx.redis, ctx.settings).list(limit, subscriptions=wanted)

    return r
