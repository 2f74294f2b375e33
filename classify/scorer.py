"""Score a batch of article vectors against every enabled topic at once, and explain each match.

All topics' description, example and counter-example vectors are stacked into matrices once per topic
change, so a batch costs three matrix products plus per-topic reductions; keyword rules run only for
topics that have them, on words extracted once per article.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from classify.embedder import Embedder, Vectors
from classify.model import (
    FEATURES,
    SIM_FEATURES,
    Background,
    F,
    TopicModel,
    TopicVectors,
    centroid,
    fit,
    sigmoid,
    topic_text,
)
from classify.topics import Doc, KeywordIndex
from wirewatch.records import Evidence, Topic

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Scores:
    """One batch's results: ``scores[i, t]`` of article ``i`` for topic ``t`` (``index.topics[t]``)."""

    scores: Array
    features: Array
    """Shape ``(n, topics, F)``; see :data:`classify.model.FEATURES`."""
    excluded: NDArray[np.bool_]

    def passed(self, thresholds: Array) -> list[tuple[int, int]]:
        """(article, topic) pairs at or above their topic's threshold and not vetoed by ``exclude``."""
        hit = (self.scores >= thresholds[None, :]) & ~self.excluded
        return [(int(i), int(t)) for i, t in zip(*np.nonzero(hit), strict=True)]


class Scorer(Protocol):
    """Scores article vectors against topics.

    ``score(vectors, docs)`` takes unit-norm vectors (one row per article) and the articles' prepared texts
    (same order) and returns :class:`Scores` over ``topics``, whose ``i``-th entry is column ``i``. A score is
    in [0, 1]; an article whose text fires a topic's ``exclude`` rule is marked excluded and scored 0. It never
    raises for an empty batch or an empty topic list.
    """

    topics: Sequence[Topic]

    def score(self, vectors: Vectors, docs: Sequence[Doc]) -> Scores:
        """Score; see the class docstring."""
        ...


def _segments(blocks: Sequence[Vectors], dim: int) -> tuple[Vectors, NDArray[np.intp], NDArray[np.bool_]]:
    sizes = np.array([len(b) for b in blocks], dtype=np.intp)
    present = sizes > 0
    mats = [b for b in blocks if len(b)]
    stacked = np.concatenate(mats).astype(np.float32) if mats else np.zeros((0, dim), dtype=np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes[present])[:-1]]).astype(np.intp)
    return stacked, starts, present


class TopicIndex:
    """Every enabled topic with its vectors and model, stacked for batch scoring (a :class:`Scorer`)."""

    def __init__(self, entries: Sequence[tuple[TopicVectors, TopicModel]], dim: int) -> None:
        self.entries = list(entries)
        self.topics = [tv.topic for tv, _ in self.entries]
        self.dim = dim
        tvs = [tv for tv, _ in self.entries]
        self._desc = np.stack([tv.desc for tv in tvs]).astype(np.float32) if tvs else np.zeros((0, dim), np.float32)
        self._cent = np.stack([centroid(tv.desc, tv.examples) for tv in tvs]) if tvs else self._desc
        self._ex, self._ex_starts, self._has_ex = _segments([tv.examples for tv in tvs], dim)
        self._cx, self._cx_starts, self._has_cx = _segments([tv.counters for tv in tvs], dim)
        self._w = np.stack([m.weights for _, m in self.entries]) if tvs else np.zeros((0, F))
        self._b = np.array([m.bias for _, m in self.entries])
        self._kw = KeywordIndex([tv.rules for tv in tvs])
        self.thresholds = np.array([tv.topic.threshold for tv in tvs], dtype=np.float64)

    @classmethod
    def build(cls, topics: Sequence[Topic], embedder: Embedder, background: Background) -> TopicIndex:
        """Embed each topic and learn its model against ``background``."""
        return cls([(tv, fit(tv, background)) for tv in TopicVectors.build_many(topics, embedder)], embedder.dim)

    def position(self, topic_id: str) -> int:
        """The column of ``topic_id``; raises KeyError when it is not indexed."""
        for i, t in enumerate(self.topics):
            if t.id == topic_id:
                return i
        raise KeyError(topic_id)

    def score(self, vectors: Vectors, docs: Sequence[Doc]) -> Scores:
        """Score a batch; see :class:`Scorer`."""
        n, t = len(vectors), len(self.topics)
        feats = np.zeros((n, t, F))
        excluded = np.zeros((n, t), dtype=bool)
        if n == 0 or t == 0:
            return Scores(np.zeros((n, t)), feats, excluded)
        v = np.asarray(vectors, dtype=np.float32)
        s_desc = v @ self._desc.T
        ex_max = s_desc.copy()
        if len(self._ex):
            ex_max[:, self._has_ex] = np.maximum.reduceat(v @ self._ex.T, self._ex_starts, axis=1)
        cx_max = np.zeros_like(s_desc)
        if len(self._cx):
            cx_max[:, self._has_cx] = np.maximum.reduceat(v @ self._cx.T, self._cx_starts, axis=1)
        feats[:, :, 0], feats[:, :, 1], feats[:, :, 2] = s_desc, ex_max, v @ self._cent.T
        feats[:, :, 3], feats[:, :, 4] = cx_max, ex_max - cx_max
        feats[:, :, SIM_FEATURES:], excluded = self._kw.features(docs)
        logits = np.einsum("ntf,tf->nt", feats, self._w) + self._b[None, :]
        scores = np.where(excluded, 0.0, sigmoid(logits))
        return Scores(scores, feats, excluded)

    def evidence(self, vector: Vectors, doc: Doc, col: int, scores: Scores, row: int) -> Evidence:
        """Why article ``row`` scored as it did on topic ``col``: closest text, counter margin, keywords."""
        tv, _ = self.entries[col]
        topic = tv.topic
        s_desc = float(vector @ tv.desc)
        closest, kind, sim = topic_text(topic), "description", s_desc
        if len(tv.examples):
            sims = tv.examples @ vector
            j = int(np.argmax(sims))
            if float(sims[j]) > s_desc:
                closest, kind, sim = topic.examples[j], "example", float(sims[j])
        counter, margin = None, None
        if len(tv.counters):
            csims = tv.counters @ vector
            k = int(np.argmax(csims))
            counter, margin = topic.counter_examples[k], sim - float(csims[k])
        hits = tv.rules.check(doc) if not tv.rules.empty else None
        return Evidence(
            closest=closest, closest_kind=kind, similarity=round(sim, 4), counter_example=counter,
            counter_margin=None if margin is None else round(margin, 4),
            keywords=hits.fired if hits else (),
            features={name: round(float(x), 4) for name, x in zip(FEATURES, scores.features[row, col], strict=True)},
        )
