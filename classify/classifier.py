"""Articles in, Matches out: embed once, score against every enabled topic, attach evidence.

The topic set can be swapped at any time from another thread (the registry watcher): a new
:class:`~classify.scorer.TopicIndex` is built off to the side and replaces the old one in one assignment,
so a batch is always scored against one consistent set of topics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classify.background import Background, shipped_background
from classify.embedder import CachedEmbedder, Vectors
from classify.model import TopicModel, TopicVectors, desk_siblings
from classify.scorer import Scores, TopicIndex
from classify.topics import Doc, enabled
from wirewatch import metrics
from wirewatch.log import get_logger
from wirewatch.records import Article, Match, ModelInfo, Topic, utcnow

log = get_logger("classify.classifier")
FITTED_KEPT = 4096


@dataclass(frozen=True)
class Batch:
    """One classified batch: vectors, scores over ``index.topics`` and the matches that passed."""

    vectors: Vectors
    docs: list[Doc]
    scores: Scores
    index: TopicIndex
    matches: list[Match]


class Classifier:
    """Embeds articles and scores them against the current topic set."""

    def __init__(self, embedder: CachedEmbedder, background: Background | None = None, *,
                 content_chars: int = 600, include_vector: bool = True) -> None:
        self.embedder = embedder
        self.background = background if background is not None else shipped_background(embedder)
        self.model_info = ModelInfo(name=embedder.name, revision=embedder.revision, backend=embedder.backend)
        self._content_chars = content_chars
        self._include_vector = include_vector
        self._index = TopicIndex([], embedder.dim)
        self._lock = threading.Lock()
        self._fitted: dict[str, tuple[TopicVectors, TopicModel]] = {}

    @property
    def index(self) -> TopicIndex:
        """The topic set in force."""
        return self._index

    def index_for(self, topics: Sequence[Topic]) -> TopicIndex:
        """A topic index for ``topics`` (enabled or not), without changing the one in force.

        A topic whose definition did not change since it was last indexed keeps its vectors and model, so a
        change to one of a thousand topics refits one.
        """
        siblings = desk_siblings(topics)
        # A desk topic's model depends on its desk's other topics too (their examples are its counters).
        keys = [t.model_dump_json(exclude={"updated_at"}) + "\x00".join(siblings.get(t.id, ())) for t in topics]
        with self._lock:  # the embedder's cache is not thread-safe
            todo = {k: t for k, t in zip(keys, topics, strict=True) if k not in self._fitted}
            if todo:
                fresh = TopicIndex.build(list(todo.values()), self.embedder, self.background, siblings,
                                         languages=self.languages)
                self._fitted.update(zip(todo, fresh.entries, strict=True))
            entries = [self._fitted[k] for k in keys]
            while len(self._fitted) > max(FITTED_KEPT, 2 * len(keys)):
                self._fitted.pop(next(iter(self._fitted)))
        return TopicIndex(entries, self.embedder.dim, languages=self.languages)

    @property
    def languages(self) -> frozenset[str] | None:
        """The languages the model reads (None: any); see :class:`~classify.scorer.TopicIndex`."""
        return getattr(self.embedder, "languages", None)

    def doc_of(self, article: Article) -> Doc:
        """``article``'s text prepared for the keyword rules, with its language and publication time."""
        return Doc.of(self.text_of(article), article.language, article.published_at)

    def set_topics(self, topics: Sequence[Topic]) -> None:
        """Put the enabled ``topics`` in force (called by the registry watcher on every change)."""
        started = time.monotonic()
        try:
            index = self.index_for(enabled(topics))
        except Exception:
            metrics.CLASSIFY_TOPIC_RELOADS.labels("failed").inc()
            raise
        self._index = index
        metrics.CLASSIFY_TOPICS.set(len(index.topics))
        metrics.CLASSIFY_TOPIC_RELOADS.labels("ok").inc()
        log.info("topics_in_force", count=len(index.topics), seconds=round(time.monotonic() - started, 3),
                 versions={t.id: t.version for t in index.topics})

    def text_of(self, article: Article) -> str:
        """The text embedded for ``article``."""
        return article.text(self._content_chars)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` through the cache, counting hits and misses."""
        hits, misses = self.embedder.hits, self.embedder.misses
        started = time.monotonic()
        with self._lock:
            vectors = self.embedder.embed(texts)
        metrics.CLASSIFY_EMBED_SECONDS.observe(time.monotonic() - started)
        metrics.CLASSIFY_EMBED_CACHE.labels("hit").inc(self.embedder.hits - hits)
        metrics.CLASSIFY_EMBED_CACHE.labels("miss").inc(self.embedder.misses - misses)
        return vectors

    def classify(self, articles: Sequence[Article], *, index: TopicIndex | None = None,
                 only_topic: str | None = None, replay: bool = False) -> Batch:
        """Score ``articles`` against ``index`` (default: the set in force) and build their Matches.

        ``only_topic`` restricts the matches to one topic id (a replay for one topic).
        """
        idx = index or self._index
        texts = [self.text_of(a) for a in articles]
        vectors = self.embed(texts)
        docs = [Doc.of(t, a.language, a.published_at) for t, a in zip(texts, articles, strict=True)]
        scores = idx.score(vectors, docs)
        now = utcnow()
        matches = []
        as_tuple: dict[int, tuple[float, ...]] = {}
        pairs = [(row, col) for row, col in scores.passed(idx.thresholds)
                 if only_topic is None or idx.topics[col].id == only_topic]
        evidence = idx.evidence_many(vectors, docs, pairs, scores)
        for (row, col), ev in zip(pairs, evidence, strict=True):
            topic = idx.topics[col]
            vec = None
            if self._include_vector:
                if row not in as_tuple:
                    as_tuple[row] = tuple(vectors[row].astype(np.float64).round(6).tolist())
                vec = as_tuple[row]
            matches.append(Match(
                article=articles[row], topic_id=topic.id, topic_version=topic.version,
                score=round(float(scores.scores[row, col]), 4), threshold=topic.threshold,
                evidence=ev, model=self.model_info,
                classified_at=now, vector=vec, replay=replay,
            ))
        return Batch(vectors, docs, scores, idx, matches)
