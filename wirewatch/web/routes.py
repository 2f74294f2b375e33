"""The API's own routes: recent matches (listing, counts, live stream), feedback, and the caller's key."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from wirewatch import metrics, registry
from wirewatch.auth import ApiContext, ApiKey, CurrentKey, can_see, get_context
from wirewatch.records import Match, Topic
from wirewatch.state import key
from wirewatch.web.matches import Event, Hub, MatchStore, TooManyStreams

TOPIC_ID = r"^[a-z0-9][a-z0-9_.-]*$"
_TOPIC_RE = re.compile(TOPIC_ID)
Ctx = Annotated[ApiContext, Depends(get_context)]


class MatchPage(BaseModel):
    """A page of matches, newest first, and the cursor of the next page (null at the end)."""

    items: list[Match]
    next_cursor: str | None


class TopicCounts(BaseModel):
    """Matches of one topic per bucket: ``[bucket start (epoch s), count]`` pairs."""

    topic_id: str
    buckets: list[tuple[int, int]]


class MatchCounts(BaseModel):
    """Matches per topic over time, for the dashboard chart."""

    bucket_s: int
    since: int
    until: int
    topics: list[TopicCounts]


class Feedback(BaseModel):
    """A judgement on a delivered match: it was relevant, not relevant, or a duplicate of an earlier alert."""

    model_config = ConfigDict(extra="forbid")

    topic_id: str = Field(min_length=1, max_length=64, pattern=TOPIC_ID)
    article_id: str = Field(min_length=1, max_length=128)
    verdict: Literal["relevant", "not_relevant", "duplicate"]
    note: str = Field(default="", max_length=1000)


class FeedbackResult(BaseModel):
    """What feedback changed: the topic's new version (unchanged for duplicates or a repeated judgement)."""

    topic_id: str
    topic_version: int
    changed: bool
    verdict: str


class KeyInfo(BaseModel):
    """The calling key, as the API sees it."""

    key: ApiKey


def _store(ctx: ApiContext) -> MatchStore:
    store: MatchStore = ctx.extras["match_store"]
    return store


def router() -> APIRouter:
    """The API's own ``/v1`` routes."""
    r = APIRouter(prefix="/v1", tags=["matches"])

    @r.get("/me", response_model=KeyInfo, tags=["keys"])
    def me(api_key: CurrentKey) -> KeyInfo:
        """The calling key: id, name, scope, caps."""
        return KeyInfo(key=api_key)

    @r.get("/matches", response_model=MatchPage)
    def list_matches(
        api_key: CurrentKey, ctx: Ctx,
        topic: Annotated[str | None, Query(max_length=64, pattern=TOPIC_ID, description="only this topic")] = None,
        since: Annotated[datetime | None, Query(description="classified at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="classified at or before (ISO 8601)")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000, description="next_cursor of the previous page")] = None,
    ) -> MatchPage:
        """Recent matches, newest first, filtered by topic and time, with cursor pagination."""
        try:
            raws, nxt = _store(ctx).page_raw(topic=topic, since=since, until=until, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        # The stored JSON is the Match record's own encoding: send it as is rather than decode and re-encode.
        body = b'{"items":[' + b",".join(raws) + b'],"next_cursor":' + json.dumps(nxt).encode() + b"}"
        return Response(body, media_type="application/json")  # type: ignore[return-value]

    @r.get("/matches/counts", response_model=MatchCounts)
    def match_counts(
        api_key: CurrentKey, ctx: Ctx,
        hours: Annotated[float, Query(gt=0, le=192, description="how far back")] = 24.0,
    ) -> MatchCounts:
        """Matches per topic per 5 minutes over the last ``hours`` (the dashboard's chart)."""
        until = time.time()
        since = until - hours * 3600
        counts = _store(ctx).counts(since, until)
        return MatchCounts(bucket_s=300, since=int(since), until=int(until),
                           topics=[TopicCounts(topic_id=t, buckets=b) for t, b in sorted(counts.items())])

    @r.get("/matches/{topic_id}/{article_id}", response_model=Match)
    def get_match(topic_id: str, article_id: str, api_key: CurrentKey, ctx: Ctx) -> Match:
        """One recent match."""
        m = _store(ctx).get(topic_id, article_id)
        if m is None:
            raise HTTPException(404, "match not found among recent matches")
        return m

    @r.get("/stream", response_class=StreamingResponse,
           responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}})
    async def stream(
        request: Request, api_key: CurrentKey, ctx: Ctx,
        topic: Annotated[list[str] | None, Query(description="topics to follow (repeat); none = all")] = None,
    ) -> StreamingResponse:
        """Server-sent events: one ``match`` event per live match of the chosen topics; comments as heartbeat.

        A client reconnecting with ``Last-Event-ID`` first gets the stored matches it missed (up to 500).
        429 when the key already holds ``api.streams_per_key`` streams.
        """
        topics = topic or []
        for t in topics:
            if len(t) > 64 or not _TOPIC_RE.match(t):
                raise HTTPException(422, f"topic: {t[:64]!r} is not a topic id")
        hub: Hub = ctx.extras["hub"]
        heartbeat = ctx.settings.api.sse_heartbeat_s
        try:
            client = hub.subscribe(topics, api_key.id)
        except TooManyStreams as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": "30"}) from exc
        last_id = (request.headers.get("last-event-id") or "")[:200]

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b": connected\nretry: 3000\n\n"
                replayed: set[str] = set()
                if last_id:
                    # Subscribed first, then read the store: a match arriving meanwhile is in one or both.
                    for e in await asyncio.to_thread(_store(ctx).after, last_id, client.topics):
                        replayed.add(e.id)
                        yield _frame(e)
                while True:
                    try:
                        e = await asyncio.wait_for(client.queue.get(), timeout=heartbeat)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield b": heartbeat\n\n"
                        continue
                    if e.id in replayed:
                        replayed.discard(e.id)
                        continue
                    yield _frame(e)
            finally:
                hub.unsubscribe(client)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @r.post("/feedback", response_model=FeedbackResult, tags=["feedback"])
    def feedback(body: Feedback, api_key: CurrentKey, ctx: Ctx) -> FeedbackResult:
        """Feedback on a match: relevant / not relevant add its text to the topic's examples / counter-examples.

        The match must be among recent matches. A subscriber may judge matches of topics it owns or subscribes
        to. Judging the same match the same way twice changes nothing the second time.
        """
        m = _store(ctx).get(body.topic_id, body.article_id)
        if m is None:
            raise HTTPException(404, "match not found among recent matches")
        topics = registry.topics(ctx.redis, ctx.settings)
        topic = topics.get(body.topic_id)
        if topic is None or not _may_judge(api_key, topic, ctx):
            raise HTTPException(404, "topic not found")
        metrics.API_FEEDBACK.labels(body.verdict).inc()
        record = {"key": api_key.id, "topic_id": body.topic_id, "article_id": body.article_id,
                  "verdict": body.verdict, "note": body.note, "at": time.time()}
        ctx.redis.lpush(key(ctx.settings, "api", "feedback"), json.dumps(record))
        ctx.redis.ltrim(key(ctx.settings, "api", "feedback"), 0, 9999)
        if body.verdict == "duplicate":
            return FeedbackResult(topic_id=topic.id, topic_version=topic.version, changed=False,
                                  verdict=body.verdict)
        text = m.article.title.strip()
        if m.article.summary.strip():
            text = f"{text}\n{m.article.summary.strip()}"
        relevant = body.verdict == "relevant"
        changed = False
        from classify.topics import apply_feedback  # the one rule for what a judgement does to a topic

        def judge(current: Topic) -> Topic:  # on the topic as stored now: a concurrent edit is never lost
            nonlocal changed
            changed = text not in (current.examples if relevant else current.counter_examples)
            return apply_feedback(current, text[:4000], relevant) if changed else current

        done = topics.update(body.topic_id, judge)
        if done is None:
            raise HTTPException(404, "topic not found")
        return FeedbackResult(topic_id=done[0].id, topic_version=done[0].version, changed=changed,
                              verdict=body.verdict)

    return r


def _frame(e: Event) -> bytes:
    return b"event: match\nid: " + e.id.encode() + b"\ndata: " + e.data + b"\n\n"


def _may_judge(api_key: ApiKey, topic: Topic, ctx: ApiContext) -> bool:
    if can_see(api_key, topic.owner):
        return True
    subs = registry.subscriptions(ctx.redis, ctx.settings).all()
    return any(s.topic_id == topic.id and s.owner == api_key.id for s in subs)
