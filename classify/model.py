"""A small per-topic model over keyword and embedding evidence, learned from the topic's own examples.

Features of an (article, topic) pair, see :data:`FEATURES`: cosine to the topic's name and description, the
best cosine to an example, cosine to the examples' centroid, the best cosine to a counter-example, the margin
between the two, and three keyword signals. A logistic regression per topic learns their weights from the
positive examples (each scored leave-one-out, so an example is never its own nearest neighbour) against the
counter-examples and a set of background articles; the background is what makes the score *calibrated*:
0.5 means "as far into the topic as its examples are from everyday news", whatever the topic's wording.
With five examples a free fit is fragile, so weights are pulled towards a prior and keep their sign
(similarity raises a score, similarity to a counter-example lowers it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classify.embedder import Embedder, Vectors
from classify.topics import Doc, KeywordRules
from wirewatch.records import Topic

FEATURES = ("desc", "ex_max", "centroid", "cx_max", "margin", "kw_bool", "kw_any", "kw_all")
SIM_FEATURES = 5
F = len(FEATURES)
# Weights over standardized features: what a fit is pulled towards, and all there is when a topic has fewer
# than two examples to learn from.
PRIOR_WEIGHTS = np.array([0.5, 1.0, 0.5, -0.5, 0.5, 1.0, 0.5, 0.5], dtype=np.float64)
PRIOR_BACKGROUND_QUANTILE = 0.99
LAMBDA = 1.0
# Examples nearly always contain a topic's keywords and everyday news never does, so a free keyword weight
# grows without bound and drowns the embedding evidence; it stays close to its prior instead.
KEYWORD_PENALTY = 3.0
Array = NDArray[np.float64]


def topic_text(topic: Topic) -> str:
    """The text that stands for the topic's description: its name and description."""
    return f"{topic.name}. {topic.description}".strip() if topic.description else topic.name


@dataclass(frozen=True)
class TopicVectors:
    """A topic with its texts embedded and its keyword rules compiled."""

    topic: Topic
    desc: Vectors
    examples: Vectors
    counters: Vectors
    rules: KeywordRules

    @classmethod
    def build(cls, topic: Topic, embedder: Embedder) -> TopicVectors:
        """Embed the topic's description, examples and counter-examples in one call."""
        return cls.build_many([topic], embedder)[0]

    @classmethod
    def build_many(cls, topics: Sequence[Topic], embedder: Embedder) -> list[TopicVectors]:
        """Embed every topic's texts in one call (model batches stay full)."""
        texts = [t for topic in topics for t in (topic_text(topic), *topic.examples, *topic.counter_examples)]
        vecs = embedder.embed(texts)
        out, at = [], 0
        for topic in topics:
            k, m = len(topic.examples), len(topic.counter_examples)
            out.append(cls(topic, vecs[at], vecs[at + 1:at + 1 + k], vecs[at + 1 + k:at + 1 + k + m],
                           KeywordRules(topic)))
            at += 1 + k + m
        return out


def centroid(desc: Vectors, examples: Vectors) -> Vectors:
    """Unit-norm mean of the description and the examples."""
    c = desc + examples.sum(axis=0) if len(examples) else desc.copy()
    n = float(np.linalg.norm(c))
    return (c / n).astype(np.float32) if n > 0 else c


def sim_features(v: Vectors, desc: Vectors, examples: Vectors, counters: Vectors) -> Array:
    """The five similarity features of each row of ``v`` against one topic, shape ``(n, 5)``."""
    s_desc = v @ desc
    ex_max = (v @ examples.T).max(axis=1) if len(examples) else s_desc
    cent = v @ centroid(desc, examples)
    cx_max = (v @ counters.T).max(axis=1) if len(counters) else np.zeros(len(v), dtype=np.float32)
    return np.stack([s_desc, ex_max, cent, cx_max, ex_max - cx_max], axis=1).astype(np.float64)


def keyword_features(rules: KeywordRules, docs: Sequence[Doc]) -> Array:
    """The three keyword features of each doc against one topic, shape ``(n, 3)``."""
    out = np.zeros((len(docs), 3))
    if rules.empty:
        return out
    for i, doc in enumerate(docs):
        out[i] = rules.check(doc).features()
    return out


@dataclass(frozen=True)
class TopicModel:
    """Learned weights of one topic: ``score = sigmoid(features @ weights + bias)``."""

    weights: Array
    bias: float
    kind: str
    """``learned`` (logistic regression on examples) or ``prior`` (too few examples; fixed weights)."""
    positives: int
    negatives: int
    background_scores: Array = field(repr=False)

    def logits(self, x: Array) -> Array:
        """Raw logits for feature rows ``x``."""
        return np.asarray(x @ self.weights + self.bias, dtype=np.float64)

    def percentile_threshold(self, q: float) -> float:
        """The score that ``q`` percent of the background stays under."""
        if not len(self.background_scores):
            return 0.5
        return float(np.percentile(self.background_scores, q))


def sigmoid(x: Array) -> Array:
    """The logistic function, overflow-safe."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


@dataclass(frozen=True)
class Background:
    """Everyday articles, embedded: the negatives every topic is calibrated against."""

    vectors: Vectors
    docs: tuple[Doc, ...]

    @classmethod
    def build(cls, texts: Sequence[str], embedder: Embedder) -> Background:
        """Embed ``texts``."""
        return cls(embedder.embed(list(texts)), tuple(Doc.of(t) for t in texts))

    @classmethod
    def with_vectors(cls, texts: Sequence[str], vectors: Vectors) -> Background:
        """From texts already embedded (the recent-article store)."""
        return cls(np.asarray(vectors, dtype=np.float32), tuple(Doc.of(t) for t in texts))

    def __add__(self, other: Background) -> Background:
        return Background(np.concatenate([self.vectors, other.vectors]), self.docs + other.docs)


def shipped_background_texts() -> list[str]:
    """The background articles the project ships (written for it; everyday news across desks)."""
    raw = resources.files("classify").joinpath("data/background.jsonl").read_text()
    out = []
    for line in raw.splitlines():
        if line.strip():
            item = json.loads(line)
            out.append(f"{item['title']}\n{item.get('summary', '')}".strip())
    return out


def training_set(tv: TopicVectors, background: Background) -> tuple[Array, Array, Array]:
    """Features, labels and sample weights for one topic (examples scored leave-one-out)."""
    rows: list[Array] = []
    labels: list[float] = []
    weights: list[float] = []
    topic = tv.topic
    n_ex, n_cx = len(tv.examples), len(tv.counters)
    for i in range(n_ex):
        others = np.delete(tv.examples, i, axis=0)
        rows.append(np.concatenate([sim_features(tv.examples[i:i + 1], tv.desc, others, tv.counters)[0],
                                    keyword_features(tv.rules, [Doc.of(topic.examples[i])])[0]]))
        labels.append(1.0)
    for j in range(n_cx):
        others = np.delete(tv.counters, j, axis=0)
        rows.append(np.concatenate([sim_features(tv.counters[j:j + 1], tv.desc, tv.examples, others)[0],
                                    keyword_features(tv.rules, [Doc.of(topic.counter_examples[j])])[0]]))
        labels.append(0.0)
    n_bg = len(background.vectors)
    if n_bg:
        bg = np.concatenate([sim_features(background.vectors, tv.desc, tv.examples, tv.counters),
                             keyword_features(tv.rules, background.docs)], axis=1)
        rows.extend(bg)
        labels.extend([0.0] * n_bg)
    # Positives and negatives weigh the same in total; counter-examples, chosen by a person, weigh as much
    # as the whole background.
    neg_total = 1.0 + (1.0 if n_cx else 0.0)
    pos_w = neg_total / max(n_ex, 1)
    cx_w = (1.0 / n_cx) if n_cx else 0.0
    bg_w = 1.0 / max(n_bg, 1)
    weights = [pos_w] * n_ex + [cx_w] * n_cx + [bg_w] * n_bg
    return np.asarray(rows, dtype=np.float64).reshape(-1, F), np.asarray(labels), np.asarray(weights)


def _fit_logistic(z: Array, y: Array, w: Array, prior: Array, lam: Array) -> tuple[Array, float]:
    """Weighted logistic regression, pulled towards ``prior`` and sign-constrained.

    Evidence features may only push a score the way they mean (similarity up, counter-similarity down):
    with a handful of examples an unconstrained fit happily learns that *more* similar is *less* relevant.
    Solved by projected Newton steps on the free variables (a few milliseconds for hundreds of rows).
    """
    sw = w / w.sum()
    x1 = np.hstack([z, np.ones((len(z), 1))])
    lam1 = np.append(lam, 0.0)
    prior1 = np.append(prior, 0.0)
    lower = np.array([-np.inf if n == "cx_max" else 0.0 for n in FEATURES] + [-np.inf])
    upper = np.array([0.0 if n == "cx_max" else np.inf for n in FEATURES] + [np.inf])

    def loss(params: Array) -> float:
        m = x1 @ params
        diff = params - prior1
        return float(sw @ (np.logaddexp(0.0, m) - y * m)) + 0.5 * float(lam1 @ (diff * diff))

    params = np.clip(prior1.copy(), lower, upper)
    value = loss(params)
    for _ in range(100):
        p = sigmoid(x1 @ params)
        grad = x1.T @ (sw * (p - y)) + lam1 * (params - prior1)
        hess = x1.T @ (x1 * (sw * p * (1 - p))[:, None]) + np.diag(lam1 + 1e-9)
        pinned = ((params <= lower) & (grad > 0)) | ((params >= upper) & (grad < 0))
        free = ~pinned
        step = np.zeros_like(params)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        t = 1.0
        while True:
            new = np.clip(params - t * step, lower, upper)
            new_value = loss(new)
            if new_value <= value - 1e-4 * float(grad @ (params - new)) or t < 1e-6:
                break
            t /= 2
        done = float(np.max(np.abs(new - params))) < 1e-8
        params, value = new, new_value
        if done:
            break
    return params[:-1].astype(np.float64), float(params[-1])


def fit(tv: TopicVectors, background: Background, *, lam: float = LAMBDA) -> TopicModel:
    """Learn one topic's model. Fewer than two examples: fixed prior weights, calibrated on the background."""
    x, y, w = training_set(tv, background)
    neg = x[y == 0]
    mu = neg.mean(axis=0) if len(neg) else np.zeros(F)
    sd = neg.std(axis=0) if len(neg) > 1 else np.ones(F)
    sd[sd < 1e-3] = 1.0
    # Keyword features are already on a 0-1 scale; standardizing them by how rarely the background fires
    # would turn one hit into a dozen standard deviations.
    mu[SIM_FEATURES:], sd[SIM_FEATURES:] = 0.0, 1.0
    z = (x - mu) / sd
    n_pos = int(y.sum())
    if n_pos >= 2 and len(neg) >= 2:
        penalty = np.array([lam] * SIM_FEATURES + [lam * KEYWORD_PENALTY] * (F - SIM_FEATURES))
        coef, intercept = _fit_logistic(z, y, w, PRIOR_WEIGHTS, penalty)
        kind = "learned"
    else:
        coef = PRIOR_WEIGHTS.copy()
        bg_logits = z[y == 0] @ coef
        intercept = -float(np.quantile(bg_logits, PRIOR_BACKGROUND_QUANTILE)) if len(bg_logits) else -2.0
        kind = "prior"
    weights = coef / sd
    bias = intercept - float((mu / sd) @ coef)
    n_bg = len(background.vectors)
    bg_scores = sigmoid(x[len(x) - n_bg:] @ weights + bias) if n_bg else np.zeros(0)
    return TopicModel(weights, bias, kind, n_pos, int(len(y) - n_pos), bg_scores)


def describe(model: TopicModel) -> dict[str, Any]:
    """The model's weights by feature name, for ``topics test`` and the API."""
    return {"kind": model.kind, "bias": round(model.bias, 3), "positives": model.positives,
            "negatives": model.negatives,
            "weights": {n: round(float(w), 3) for n, w in zip(FEATURES, model.weights, strict=True)}}
