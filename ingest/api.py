"""Feed routes under ``/v1/feeds``: list, create, read, change, delete, per-feed health, OPML in and out.

Feeds are shared definitions: every key lists and reads them; a subscriber changes only the feeds it owns
(others answer 404), an admin changes all; OPML import is for admins. URLs pass the SSRF check
(:func:`wirewatch.netguard.check_url` with ``api.url_allowlist``) before they are stored. Running ingest
workers pick every change up within seconds (registry hot reload).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingest.health import feed_health
from ingest.opml import OpmlError, export_opml, parse_opml
from ingest.scheduler import Policy
from ingest.state import StateStore
from wirewatch import etag, netguard
from wirewatch import registry as regmod
from wirewatch.auth import AdminKey, ApiContext, CurrentKey, check_cap, ensure_owner, get_context, owned_count
from wirewatch.identity import feed_id
from wirewatch.records import Feed

Ctx = Annotated[ApiContext, Depends(get_context)]
FullTextMode = Literal["auto", "always", "never"]
FeedId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
MAX_OPML_BYTES = 2 * 1024 * 1024


class FeedIn(BaseModel):
    """A feed as a client registers it; ``id`` (from the URL), ``owner`` and ``updated_at`` are set here."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    name: str = Field(default="", max_length=200)
    interval_s: float | None = Field(default=None, gt=0, le=7 * 86400, description="unset = adaptive")
    tags: list[str] = Field(default_factory=list, max_length=50)
    enabled: bool = True
    full_text: FullTextMode | None = Field(
        default=None, description="read entries' own pages: always, never, auto (short summaries); unset = the "
                                  "ingest default")


class FeedPatch(BaseModel):
    """Fields a client may change on an existing feed (omitted ones stay)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    name: str | None = Field(default=None, max_length=200)
    interval_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    tags: list[str] | None = Field(default=None, max_length=50)
    enabled: bool | None = None
    full_text: FullTextMode | None = Field(default=None, description="null = back to the ingest default")


class ImportResult(BaseModel):
    """What an OPML import did."""

    added: list[str]
    existing: list[str]
    skipped: list[dict[str, str]]


def _checked(ctx: ApiContext, url: str) -> str:
    try:
        netguard.check_url(url, ctx.settings.api.url_allowlist)
    except netguard.UnsafeURLError as exc:
        raise HTTPException(422, str(exc)) from exc
    return url


def _registry(ctx: ApiContext) -> regmod.Registry[Feed]:
    return regmod.feeds(ctx.redis, ctx.settings)


def router() -> APIRouter:
    """The feeds routes."""
    r = APIRouter(prefix="/v1/feeds", tags=["feeds"])

    @r.get("", response_model=list[Feed])
    def list_feeds(api_key: CurrentKey, ctx: Ctx) -> list[Feed]:
        """Every registered feed."""
        return _registry(ctx).all()

    @r.post("", response_model=Feed, status_code=201)
    def create_feed(body: FeedIn, api_key: CurrentKey, ctx: Ctx) -> Feed:
        """Register a feed owned by the caller; 409 when the URL is already registered, 422 for an unsafe URL."""
        reg = _registry(ctx)
        url = _checked(ctx, body.url)
        check_cap(api_key, "feeds", owned_count(api_key, reg.all()))
        feed = Feed(id=feed_id(url), url=url, name=body.name, interval_s=body.interval_s, tags=tuple(body.tags),
                    enabled=body.enabled, full_text=body.full_text, owner=api_key.id, updated_at=datetime.now(UTC))
        if not reg.put_if_absent(feed):
            raise HTTPException(409, f"feed {feed.id} ({url}) is already registered")
        return feed

    @r.get("/health")
    def all_health(api_key: CurrentKey, ctx: Ctx) -> list[dict[str, Any]]:
        """Health of every feed (see ``GET /v1/feeds/{id}/health``)."""
        states = StateStore(ctx.redis, ctx.settings).load_all()
        policy, now = Policy(ctx.settings.ingest), time.time()
        return [feed_health(f, states.get(f.id), policy, now) for f in _registry(ctx).all()]

    @r.get("/export")
    def export(api_key: CurrentKey, ctx: Ctx) -> Response:
        """All feeds as an OPML 2.0 document."""
        return Response(export_opml(_registry(ctx).all()), media_type="text/x-opml+xml",
                        headers={"Content-Disposition": 'attachment; filename="wirewatch-feeds.opml"'})

    @r.post("/import", response_model=ImportResult)
    async def import_opml(request: Request, api_key: AdminKey, ctx: Ctx) -> ImportResult:
        """Register the feeds of an OPML document sent as the request body (admin); existing ones are kept."""
        data = await request.body()
        if len(data) > MAX_OPML_BYTES:
            raise HTTPException(413, f"OPML over {MAX_OPML_BYTES} bytes")
        try:
            imported = parse_opml(data)
        except OpmlError as exc:
            raise HTTPException(422, str(exc)) from exc
        reg = _registry(ctx)
        result = ImportResult(added=[], existing=[], skipped=[{"url": u, "reason": why} for u, why in imported.skipped])
        for feed in imported.feeds:
            try:
                netguard.check_url(feed.url, ctx.settings.api.url_allowlist)
            except netguard.UnsafeURLError as exc:
                result.skipped.append({"url": feed.url, "reason": str(exc)})
                continue
            owned = feed.model_copy(update={"owner": api_key.id, "updated_at": datetime.now(UTC)})
            (result.added if reg.put_if_absent(owned) else result.existing).append(feed.id)
        return result

    @r.get("/{fid}", response_model=Feed)
    def get_feed(fid: FeedId, api_key: CurrentKey, ctx: Ctx, response: Response) -> Feed:
        """One feed, with its ETag; 404 when unknown."""
        got = _registry(ctx).get_versioned(fid)
        if got is None:
            raise HTTPException(404, "feed not found")
        etag.tag(response, got[1])
        return got[0]

    @r.get("/{fid}/health")
    def health(fid: FeedId, api_key: CurrentKey, ctx: Ctx) -> dict[str, Any]:
        """Last success, last error and why, items, next due, observed rate and whether it went quiet."""
        feed = _registry(ctx).get(fid)
        if feed is None:
            raise HTTPException(404, "feed not found")
        st = StateStore(ctx.redis, ctx.settings).get(fid)
        return feed_health(feed, st, Policy(ctx.settings.ingest), time.time())

    @r.patch("/{fid}", response_model=Feed, responses={412: {"description": "If-Match is not the current ETag"}})
    def change_feed(fid: FeedId, body: FeedPatch, api_key: CurrentKey, ctx: Ctx, response: Response,
                    if_match: etag.IfMatch = None) -> Feed:
        """Change a feed the caller owns (any, for admin); re-enabling clears the disabled reason.

        With ``If-Match`` (the ETag of a read) the change applies only if nobody changed the feed since
        (the API or a worker following a redirect): else 412.
        """
        reg = _registry(ctx)
        ensure_owner(api_key, reg.get(fid), "feed")
        changes: dict[str, Any] = body.model_dump(exclude_unset=True)
        if "url" in changes and changes["url"] is not None:
            _checked(ctx, changes["url"])
        if "tags" in changes and changes["tags"] is not None:
            changes["tags"] = tuple(changes["tags"])
        changes = {k: v for k, v in changes.items() if v is not None or k in ("interval_s", "full_text")}
        if changes.get("enabled"):
            changes["disabled_reason"] = ""

        def change(feed: Feed) -> Feed:
            ensure_owner(api_key, feed, "feed")
            try:
                return Feed.model_validate(feed.model_copy(update=changes | {"updated_at": datetime.now(UTC)})
                                           .model_dump())
            except ValidationError as exc:
                raise HTTPException(422, str(exc.errors()[0]["msg"])) from exc

        done = reg.update(fid, change, expect=etag.expected(if_match))
        ensure_owner(api_key, done and done[0], "feed")
        assert done is not None
        etag.tag(response, done[1])
        return done[0]

    @r.delete("/{fid}", status_code=204)
    def delete_feed(fid: FeedId, api_key: CurrentKey, ctx: Ctx) -> Response:
        """Remove a feed the caller owns (any, for admin), with its polling state."""
        reg = _registry(ctx)
        feed = reg.get(fid)
        ensure_owner(api_key, feed, "feed")
        reg.delete(fid)
        StateStore(ctx.redis, ctx.settings).delete(fid)
        return Response(status_code=204)

    return r
