"""Topic routes: create, read, change and delete topics; preview a topic on recent news; test it on a text.

Topics are shared definitions: every key can list and read them; a subscriber changes only the topics it
owns (others answer 404), an admin changes all. Each change is a new version, and running workers pick it
up within seconds. Preview and test load the embedding model once per API process, on first use.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from classify.classifier import Classifier
from classify.topics import KeywordRules, TopicStore
from wirewatch import etag
from wirewatch.auth import ApiContext, CurrentKey, check_cap, ensure_owner, get_context, owned_count
from wirewatch.records import Article, Evidence, Topic, utcnow
from wirewatch.settings import Settings

Ctx = Annotated[ApiContext, Depends(get_context)]
TopicId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
_LOCK = threading.Lock()
_CLASSIFIER: dict[str, Classifier] = {}


class TopicIn(BaseModel):
    """A topic as written by a client; ``version``, ``owner`` and ``updated_at`` are set by the server."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    examples: list[str] = Field(default_factory=list, max_length=200)
    counter_examples: list[str] = Field(default_factory=list, max_length=200)
    include_any: list[str] = Field(default_factory=list, max_length=100)
    include_all: list[str] = Field(default_factory=list, max_length=100)
    exclude: list[str] = Field(default_factory=list, max_length=100)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    desk: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$",
                             description="topics of one desk are exclusive: an article goes to its best one")
    since: str | None = Field(default=None, max_length=40,
                              description="an event's window opens (ISO 8601 date or date-time, UTC when no offset): "
                                          "articles published earlier are not matched")
    until: str | None = Field(default=None, max_length=40,
                              description="the window closes (a bare date: the end of that day): articles published "
                                          "from then on are not matched")
    enabled: bool = True

    def topic(self, *, version: int = 1, owner: str | None = None) -> Topic:
        """As a Topic record; 422 naming the keyword that has no word characters."""
        data = self.model_dump() | {"version": version, "owner": owner, "updated_at": utcnow()}
        try:
            topic = Topic.model_validate(data)
            KeywordRules(topic)
        except (ValueError, ValidationError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return topic


class PreviewIn(BaseModel):
    """A topic to try on recent articles before it is saved."""

    model_config = ConfigDict(extra="allow")

    hours: float = Field(default=24.0, gt=0, le=24 * 30)
    near: float = Field(default=0.15, ge=0, le=1)
    limit: int = Field(default=50, ge=1, le=500)


class Scored(BaseModel):
    """A recent article with its score for the previewed topic."""

    article_id: str
    title: str
    source: str
    url: str | None
    published_at: str
    score: float


class PreviewOut(BaseModel):
    """What the topic would have matched among recent articles, per day, and the near misses."""

    articles: int
    hours: float
    threshold: float
    matched: int
    per_day: dict[str, int]
    matches: list[Scored]
    near_misses: list[Scored]


class TestIn(BaseModel):
    """A text to score: title, then summary."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=1000)
    summary: str = Field(default="", max_length=20000)


class TestOut(BaseModel):
    """A topic's score for one text, and why."""

    topic_id: str
    topic_version: int
    score: float
    threshold: float
    matched: bool
    """Would alert if it arrived now: at or above the threshold, not vetoed, and now inside the topic's window."""
    excluded: bool
    """Vetoed by the topic's ``exclude`` rule."""
    outside_window: bool = False
    """Now lies outside the topic's window (``since``/``until``): the text is scored as if it did not."""
    evidence: Evidence
    model: dict[str, Any]


def classifier_for(settings: Settings) -> Classifier:
    """The process's classifier (model loaded on first use)."""
    from classify.embedder import embedder_for

    c = settings.classify
    key = f"{c.model}|{c.backend}"
    with _LOCK:
        if key not in _CLASSIFIER:
            emb = embedder_for(c)
            _CLASSIFIER[key] = Classifier(emb, content_chars=c.content_chars)
        return _CLASSIFIER[key]


def _store(ctx: ApiContext) -> TopicStore:
    return TopicStore(ctx.redis, ctx.settings)


def router() -> APIRouter:
    """The topics routes."""
    r = APIRouter(prefix="/v1/topics", tags=["topics"])

    @r.get("", response_model=list[Topic])
    def list_topics(api_key: CurrentKey, ctx: Ctx) -> list[Topic]:
        """Every topic (topics are shared definitions)."""
        return _store(ctx).all()

    @r.post("", response_model=Topic, status_code=201)
    def create_topic(body: TopicIn, api_key: CurrentKey, ctx: Ctx) -> Topic:
        """Create a topic (version 1, owned by the caller); 409 when the id is taken."""
        store = _store(ctx)
        check_cap(api_key, "topics", owned_count(api_key, store.all()))
        topic = body.topic(owner=api_key.id)
        if not store.registry.put_if_absent(topic):
            raise HTTPException(409, f"topic {body.id!r} already exists")
        return topic

    @r.post("/preview", response_model=PreviewOut)
    def preview(body: PreviewIn, api_key: CurrentKey, ctx: Ctx) -> PreviewOut:
        """Score the recent articles against a topic that is not saved: matches, per day, near misses."""
        from classify.recent import RecentStore

        extra = dict(body.model_extra or {})
        if not (extra.get("description") or extra.get("examples") or extra.get("name")):
            raise HTTPException(422, "a preview needs the topic's name, description or examples")
        extra.setdefault("id", "preview")
        extra.setdefault("name", extra.get("description", "")[:200] or "preview")
        try:
            topic = TopicIn.model_validate(extra).topic()
        except ValidationError as exc:
            raise HTTPException(422, str(exc)) from exc
        recent = RecentStore(ctx.redis, ctx.settings).recent(body.hours)
        out = PreviewOut(articles=len(recent), hours=body.hours, threshold=topic.threshold, matched=0, per_day={},
                         matches=[], near_misses=[])
        if not len(recent):
            return out
        classifier = classifier_for(ctx.settings)
        index = classifier.index_for([topic])
        docs = [classifier.doc_of(a) for a in recent.articles]
        scores = index.score(recent.vectors, docs)
        col = scores.scores[:, 0]
        hit = [i for i in range(len(recent)) if col[i] >= topic.threshold and not scores.excluded[i, 0]]
        miss = [i for i in range(len(recent)) if topic.threshold - body.near <= col[i] < topic.threshold]
        out.matched = len(hit)
        out.per_day = dict(sorted(Counter(recent.articles[i].published_at.date().isoformat() for i in hit).items()))
        out.matches = [_scored(recent.articles[i], col[i]) for i in sorted(hit, key=lambda i: -col[i])[: body.limit]]
        out.near_misses = [_scored(recent.articles[i], col[i])
                           for i in sorted(miss, key=lambda i: -col[i])[: body.limit]]
        return out

    @r.get("/{topic_id}", response_model=Topic)
    def get_topic(topic_id: TopicId, api_key: CurrentKey, ctx: Ctx, response: Response) -> Topic:
        """One topic, with its ETag."""
        got = _store(ctx).registry.get_versioned(topic_id)
        if got is None:
            raise HTTPException(404, "topic not found")
        etag.tag(response, got[1])
        return got[0]

    @r.put("/{topic_id}", response_model=Topic, responses={412: {"description": "If-Match is not the current ETag"}})
    def replace_topic(topic_id: TopicId, body: TopicIn, api_key: CurrentKey, ctx: Ctx, response: Response,
                      if_match: etag.IfMatch = None) -> Topic:
        """Replace a topic the caller owns (admin: any); the version goes up by one.

        With ``If-Match`` (the ETag of a read) the change applies only if nobody changed the topic since: else 412.
        """
        if body.id != topic_id:
            raise HTTPException(422, f"body id {body.id!r} does not match the path's {topic_id!r}")

        def replace(old: Topic) -> Topic:  # compare-and-set: two edits never share a version
            ensure_owner(api_key, old, "topic")
            return body.topic(version=old.version + 1, owner=old.owner)

        done = _store(ctx).registry.update(topic_id, replace, expect=etag.expected(if_match))
        ensure_owner(api_key, done and done[0], "topic")
        assert done is not None
        etag.tag(response, done[1])
        return done[0]

    @r.delete("/{topic_id}", status_code=204)
    def delete_topic(topic_id: TopicId, api_key: CurrentKey, ctx: Ctx) -> Response:
        """Delete a topic the caller owns (admin: any)."""
        store = _store(ctx)
        ensure_owner(api_key, store.get(topic_id), "topic")
        store.registry.delete(topic_id)
        return Response(status_code=204)

    @r.post("/{topic_id}/test", response_model=TestOut)
    def test_topic(topic_id: TopicId, body: TestIn, api_key: CurrentKey, ctx: Ctx) -> TestOut:
        """Score a text against a saved topic and show the evidence."""
        from classify.model import describe

        topic = _store(ctx).get(topic_id)
        if topic is None:
            raise HTTPException(404, "topic not found")
        classifier = classifier_for(ctx.settings)
        now = utcnow()
        # The text is what is being tried: scored without the window, which is reported apart.
        index = classifier.index_for([topic.model_copy(update={"since": None, "until": None})])
        article = Article(id="test", title=body.title, summary=body.summary, published_at=now, fetched_at=now,
                          feed_url="api:")
        batch = classifier.classify([article], index=index)
        score = float(batch.scores.scores[0, 0])
        info = classifier.model_info
        outside = not topic.in_window(now)
        return TestOut(topic_id=topic.id, topic_version=topic.version, score=round(score, 4),
                       threshold=topic.threshold, matched=bool(batch.matches) and not outside,
                       excluded=bool(batch.scores.excluded[0, 0]), outside_window=outside,
                       evidence=index.evidence(batch.vectors[0], batch.docs[0], 0, batch.scores, 0),
                       model={"name": info.name, "revision": info.revision, "backend": info.backend,
                              "topic_model": describe(index.entries[0][1])})

    return r


def _scored(article: Article, score: float) -> Scored:
    return Scored(article_id=article.id, title=article.title, source=article.source, url=article.url,
                  published_at=article.published_at.isoformat(), score=round(float(score), 4))
