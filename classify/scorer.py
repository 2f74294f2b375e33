"""Score a batch of article vectors against every enabled topic at once, and explain each match.

All topics' description, example and counter-example vectors are stacked into matrices once per topic
change, so a batch costs three matrix products plus per-topic reductions; keyword rules run only for
topics that have them, on words extracted once per article.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from classify.background import Background, is_roundup, is_short
from classify.embedder import Embedder, Vectors
from classify.evidence import GATE_SCALE, sigmoid
from classify.model import (
    FEATURES,
    KW_LOGIT,
    SIM_FEATURES,
    F,
    TopicModel,
    TopicVectors,
    centroid,
    fit,
)
from classify.topics import Doc, KeywordHits, KeywordIndex, KeywordRules, Term, topic_text
from wirewatch.records import Evidence, Topic

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Scores:
    """One batch's results: ``scores[i, t]`` of article ``i`` for topic ``t`` (``index.topics[t]``)."""

    scores: Array
    features: Array
    """Shape ``(n, topics, F)``; see :data:`classify.model.FEATURES`."""
    excluded: NDArray[np.bool_]
    """True where a topic's ``exclude`` rule vetoed the article, or it was published outside the topic's window."""
    outranked: NDArray[np.bool_] | None = None
    """True where another topic of the same desk scored the article higher (None: no desks)."""

    def passed(self, thresholds: Array) -> list[tuple[int, int]]:
        """(article, topic) pairs at or above their topic's threshold, not vetoed, and best in their desk.

        A topic's ``exclude`` rule vetoes; in a desk only the article's highest-scoring topic may pass.
        """
        hit = (self.scores >= thresholds[None, :]) & ~self.excluded
        if self.outranked is not None:
            hit &= ~self.outranked
        return [(int(i), int(t)) for i, t in zip(*np.nonzero(hit), strict=True)]


class Scorer(Protocol):
    """Scores article vectors against topics.

    ``score(vectors, docs)`` takes unit-norm vectors (one row per article) and the articles' prepared texts
    (same order) and returns :class:`Scores` over ``topics``, whose ``i``-th entry is column ``i``. A score is
    in [0, 1]; an article whose text fires a topic's ``exclude`` rule, or whose ``Doc.published`` lies outside
    the topic's window (``since``/``until``), is marked excluded and scored 0. It never raises for an empty batch
    or an empty topic list.
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
    """Every enabled topic with its vectors and model, stacked for batch scoring (a :class:`Scorer`).

    ``languages`` are the languages the embedding model reads (None: any). An article in another language
    (its :class:`~classify.topics.Doc` says so) has cosines that say little about it, the margin to a
    counter-example included, so its keyword evidence is not faded by that margin: a Spanish report that fires
    the topic's rule counts the rule in full, as the keyword query it replaces would.
    """

    def __init__(self, entries: Sequence[tuple[TopicVectors, TopicModel]], dim: int, *,
                 languages: frozenset[str] | None = None) -> None:
        self.entries = list(entries)
        self.languages = languages
        self.topics = [tv.topic for tv, _ in self.entries]
        self.dim = dim
        tvs = [tv for tv, _ in self.entries]
        self._desc = np.stack([tv.desc for tv in tvs]).astype(np.float32) if tvs else np.zeros((0, dim), np.float32)
        self._cent = np.stack([centroid(tv.desc, tv.examples) for tv in tvs]) if tvs else self._desc
        self._ex, self._ex_starts, self._has_ex = _segments([tv.examples for tv in tvs], dim)
        self._cx, self._cx_starts, self._has_cx = _segments([tv.counters for tv in tvs], dim)
        # Per topic, the weights for longer items (row 0) and for headlines alone (row 1).
        shaped = [(m.shape_weights(False), m.shape_weights(True)) for _, m in self.entries]
        self._w = np.array([[w for w, _ in s] for s in shaped]).reshape(-1, 2, SIM_FEATURES)
        self._b = np.array([[b for _, b in s] for s in shaped]).reshape(-1, 2)
        self._kw = KeywordIndex([tv.rules for tv in tvs])
        self._names = KeywordIndex([tv.names for tv in tvs])
        models = [m for _, m in self.entries]
        self._hit = np.array([m.keywords.hit for m in models]).reshape(-1, 2)
        self._miss = np.array([m.keywords.miss for m in models]).reshape(-1, 2)
        self._gated = np.array([len(tv.counters) > 0 for tv in tvs], dtype=bool)
        self.thresholds = np.array([tv.topic.threshold for tv in tvs], dtype=np.float64)
        self._since = np.array([-np.inf if tv.topic.since is None else tv.topic.since.timestamp() for tv in tvs])
        self._until = np.array([np.inf if tv.topic.until is None else tv.topic.until.timestamp() for tv in tvs])
        self._windowed = bool(np.isfinite(self._since).any() or np.isfinite(self._until).any())
        desks: dict[str, list[int]] = {}
        for col, tv in enumerate(tvs):
            if tv.topic.desk:
                desks.setdefault(tv.topic.desk, []).append(col)
        self.desks = {name: np.array(cols, dtype=np.intp) for name, cols in desks.items()}

    @classmethod
    def build(cls, topics: Sequence[Topic], embedder: Embedder, background: Background,
              siblings: Mapping[str, Sequence[str]] | None = None, *,
              languages: frozenset[str] | None = None) -> TopicIndex:
        """Embed each topic and learn its model against ``background`` (``siblings``: see TopicVectors)."""
        tvs = TopicVectors.build_many(topics, embedder, siblings)
        return cls([(tv, fit(tv, background)) for tv in tvs], embedder.dim, languages=languages)

    def unread(self, docs: Sequence[Doc]) -> NDArray[np.bool_]:
        """Per doc: is it in a language the model does not read?"""
        langs = self.languages
        return np.array([langs is not None and d.language is not None and d.language not in langs for d in docs],
                        dtype=bool)

    def outside(self, docs: Sequence[Doc]) -> NDArray[np.bool_]:
        """Per doc and topic: published outside the topic's window? An undated doc is inside every window."""
        when = np.array([np.nan if d.published is None else d.published.timestamp() for d in docs], dtype=np.float64)
        inside = (when[:, None] >= self._since[None, :]) & (when[:, None] < self._until[None, :])
        return np.asarray(~inside & ~np.isnan(when)[:, None], dtype=bool)

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
        feats[:, :, SIM_FEATURES:SIM_FEATURES + 3], excluded = self._kw.features(docs)
        if self._windowed:
            excluded = excluded | self.outside(docs)
        feats[:, :, SIM_FEATURES + 3] = self._names.features(docs)[0][:, :, 1]
        short = np.array([is_short(d) for d in docs])
        feats[:, :, SIM_FEATURES + 4] = short[:, None]
        roundup = np.array([is_roundup(d) for d in docs])
        feats[:, :, SIM_FEATURES + 5] = roundup[:, None]
        feats[:, :, KW_LOGIT] = self._keyword_logits(feats, short, roundup, self.unread(docs))
        shape = short.astype(np.intp)
        logits = (np.einsum("ntf,ntf->nt", feats[:, :, :SIM_FEATURES], self._w[:, shape].transpose(1, 0, 2))
                  + self._b[:, shape].T + feats[:, :, KW_LOGIT])
        scores = np.where(excluded, 0.0, sigmoid(logits))
        return Scores(scores, feats, excluded, self._outranked(scores, excluded))

    def _keyword_logits(self, feats: Array, short: NDArray[np.bool_], roundup: NDArray[np.bool_],
                        unread: NDArray[np.bool_]) -> Array:
        """What each topic's keyword evidence adds (see :class:`classify.evidence.KeywordEvidence`)."""
        hit = np.where(short[:, None], self._hit[None, :, 1], self._hit[None, :, 0])
        miss = np.where(short[:, None], self._miss[None, :, 1], self._miss[None, :, 0])
        gate = np.where(self._gated[None, :] & ~unread[:, None], sigmoid(feats[:, :, 4] / GATE_SCALE), 1.0)
        fired, named = feats[:, :, SIM_FEATURES] > 0.5, feats[:, :, SIM_FEATURES + 3] > 0.5
        counted = np.where(roundup[:, None], 0.0, hit * gate)
        return np.asarray(np.where(fired, counted, np.where(named, 0.0, miss)), dtype=np.float64)

    def _outranked(self, scores: Array, excluded: NDArray[np.bool_]) -> NDArray[np.bool_] | None:
        if not self.desks:
            return None
        out = np.zeros(scores.shape, dtype=bool)
        ranked = np.where(excluded, -1.0, scores)
        for cols in self.desks.values():
            best = cols[np.argmax(ranked[:, cols], axis=1)]
            out[:, cols] = True
            out[np.arange(len(scores)), best] = False
        return out

    def evidence(self, vector: Vectors, doc: Doc, col: int, scores: Scores, row: int) -> Evidence:
        """Why article ``row`` scored as it did on topic ``col``: closest text, counter margin, keywords."""
        return self.evidence_many(vector[None, :], [doc], [(0, col)], scores, rows=[row])[0]

    def evidence_many(self, vectors: Vectors, docs: Sequence[Doc], pairs: Sequence[tuple[int, int]], scores: Scores,
                      *, rows: Sequence[int] | None = None) -> list[Evidence]:
        """:meth:`evidence` for every (article, topic) pair of a batch, in the order of ``pairs``.

        A batch with many matches is explained with one small matrix product per topic instead of three per
        match, and each keyword term is looked up once per article however many topics share it.
        ``rows`` maps a pair's article to its row of ``scores`` (default: the same index).
        """
        out: dict[int, Evidence] = {}
        by_topic: dict[int, list[int]] = {}
        for k, (_, col) in enumerate(pairs):
            by_topic.setdefault(col, []).append(k)
        matched: dict[tuple[int, str], str | None] = {}
        vecs = np.asarray(vectors, dtype=np.float32)
        for col, ks in by_topic.items():
            tv, _ = self.entries[col]
            topic = tv.topic
            arts = np.array([pairs[k][0] for k in ks], dtype=np.intp)
            v = vecs[arts]
            sim = (v @ tv.desc).astype(np.float64)
            best = np.full(len(ks), -1, dtype=np.intp)
            if len(tv.examples):
                ex = v @ tv.examples.T
                j = np.argmax(ex, axis=1)
                top = ex[np.arange(len(ks)), j]
                best = np.where(top > sim, j, -1)
                sim = np.maximum(sim, top)
            counter: NDArray[np.intp] | None = None
            margin = np.zeros(len(ks))
            if len(tv.counters):
                cx = v @ tv.counters.T
                counter = np.argmax(cx, axis=1)
                margin = sim - cx[np.arange(len(ks)), counter]
            sc_rows = arts if rows is None else np.asarray(rows, dtype=np.intp)[arts]
            feats = np.round(scores.features[sc_rows, col], 4).tolist()
            for i, k in enumerate(ks):
                art = int(arts[i])
                out[k] = Evidence(
                    closest=topic_text(topic) if best[i] < 0 else topic.examples[int(best[i])],
                    closest_kind="description" if best[i] < 0 else "example", similarity=round(float(sim[i]), 4),
                    counter_example=None if counter is None else tv.counter_of[int(counter[i])],
                    counter_margin=None if counter is None else round(float(margin[i]), 4),
                    keywords=() if tv.rules.empty else _fired(tv.rules, docs[art], art, matched),
                    features=dict(zip(FEATURES, feats[i], strict=True)),
                )
        return [out[k] for k in range(len(pairs))]


def _fired(rules: KeywordRules, doc: Doc, art: int, matched: dict[tuple[int, str], str | None]) -> tuple[str, ...]:
    """:attr:`KeywordHits.fired` of ``rules`` on ``doc``, each term matched once per article across topics."""

    def found(terms: Sequence[Term]) -> tuple[str, ...]:
        for term in terms:
            if (art, term.raw) not in matched:
                matched[art, term.raw] = term.match(doc)
        return tuple(m for t in terms if (m := matched[art, t.raw]) is not None)

    return KeywordHits(any_hits=found(rules.any), all_hits=found(rules.all), excluded=(),
                       any_total=len(rules.any), all_total=len(rules.all)).fired
