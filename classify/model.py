"""A small per-topic model over embedding similarity and keyword evidence, learned from the topic's own examples.

Similarity features of an (article, topic) pair, see :data:`SIM_NAMES`: cosine to the topic's name and
description, the best cosine to an example, cosine to the examples' centroid, the best cosine to a
counter-example, and the margin between the two. A logistic regression per topic learns their weights from the
positive examples (each scored leave-one-out, so an example is never its own nearest neighbour) against the
counter-examples and a set of background articles. The background is what makes the score *calibrated*: 0.5
means "as far into the topic as its examples are from everyday news", whatever the topic's wording. With five
examples a free fit is fragile, so weights are pulled towards a prior and keep their sign (similarity raises a
score, similarity to a counter-example lowers it).

Feeds deliver a headline and a sentence, often only a headline, so every example, counter-example and
background article is also presented headline-only, and the model learns from both shapes. A headline alone
has lower cosines to everything than the same story with its summary, so headline-only items get weights of
their own, fitted on the headline-only rows alone: 0.5 then means the same for both shapes.

Keyword rules are not a learned weight (examples nearly always carry a topic's keywords and everyday news
never does, so a free weight grows without bound): they add a log-likelihood ratio measured on the topic's own
examples against the background, separately for headline-only and longer items. A rule that fires on one
article in a thousand of the background and on most examples (a place or actor that names the event) is strong
evidence; a common word is weak. Two guards keep that strength honest: the evidence fades when the article is
closer to a counter-example than to any example, and when the topic's rules name something (a capitalized
term) an article that names none of it loses what the examples' naming rate says it should.

The background and its keyword index are in :mod:`classify.background`, the keyword evidence in
:mod:`classify.evidence`; this module holds the topic's vectors, the similarity features and the fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classify.background import Background, headline, is_short
from classify.embedder import Embedder, Vectors
from classify.evidence import KeywordEvidence, keyword_evidence, keyword_features, sigmoid
from classify.topics import Doc, KeywordRules, topic_text
from wirewatch.records import Topic

SIM_NAMES = ("desc", "ex_max", "centroid", "cx_max", "margin")
KEYWORD_NAMES = ("kw_bool", "kw_any", "kw_all", "kw_name", "short", "roundup", "kw_logit")
FEATURES = SIM_NAMES + KEYWORD_NAMES
SIM_FEATURES = len(SIM_NAMES)
F = len(FEATURES)
KW_BOOL, KW_NAME, SHORT, ROUNDUP, KW_LOGIT = (
    FEATURES.index(n) for n in ("kw_bool", "kw_name", "short", "roundup", "kw_logit"))
# Weights over standardized similarity features: what a fit is pulled towards, and all there is when a topic
# has fewer than two examples to learn from.
PRIOR_WEIGHTS = np.array([0.5, 1.0, 0.5, -0.5, 0.5], dtype=np.float64)
# Such a topic passes one everyday item in a thousand. One in a hundred alerted on a regional stream all day:
# "the siege of Kobani" in a sentence, alone, passed 12 % of 1,566 Syria and Iraq headlines (F1 0.22; 0.54 at
# one in a thousand), the Aleppo ceasefire in a sentence F1 0.62 / 0.63 (0.68 / 0.73), full items / headlines.
PRIOR_BACKGROUND_QUANTILE = 0.999
LAMBDA = 1.0
# Background articles that the first fit already places in the topic are set aside before the second: broad
# topics ("business") have their own articles in any everyday-news background, and calling them negatives
# teaches the model to miss half of its desk.
UNLABELLED_CUT = 0.5
# Only a background large enough to hold a broad topic's own share is searched for it; from a few dozen
# articles the fit would set aside whatever happens to share a word.
SET_ASIDE_MIN_BACKGROUND = 200
# Counter-examples weigh a fifth of the background each, up to four times the background in all: the
# counters of a desk topic (its siblings' examples, twenty for five topics) or of a topic an editor has
# judged for a while are the hard negatives its stream really holds, which everyday news is not.
COUNTERS_FULL_WEIGHT = 5
COUNTERS_MAX_WEIGHT = 4.0
# A topic with no counter-examples at all has nothing between its examples and everyday news, so its fit puts
# the boundary midway, where a same-region stream has most of its headlines (the plain Kobani topic alerted on
# Isis news from all over Syria: F1 0.46, its keyword rule 0.86). For headline-only items its boundary is kept
# within this many logits of its least typical example's headline (scored leave-one-out); see docs/precision.md.
LONE_HEADLINE_MARGIN = 2.0
Array = NDArray[np.float64]


def name_rules(topic: Topic) -> KeywordRules:
    """The topic's capitalized include terms as one ``include_any`` rule: what names the event."""
    rules = KeywordRules(topic)
    names = tuple(t.raw for t in rules.all + rules.any if any(sp.case_sensitive for sp in t.spellings))
    return KeywordRules(Topic(id=topic.id, name=topic.name, include_any=names))


def desk_siblings(topics: Sequence[Topic]) -> dict[str, tuple[str, ...]]:
    """For each topic in a desk, the other desk topics' examples: in an exclusive desk they are counter-examples.

    An article about a games company's award belongs to the technology desk, not to entertainment; the
    entertainment topic learns that from the technology topic's examples without anyone writing it twice.
    """
    out: dict[str, tuple[str, ...]] = {}
    for topic in topics:
        if not topic.desk:
            continue
        own = set(topic.examples) | set(topic.counter_examples)
        seen: dict[str, None] = {}
        for other in topics:
            if other.id != topic.id and other.desk == topic.desk:
                seen.update((e, None) for e in other.examples if e not in own)
        out[topic.id] = tuple(seen)
    return out


@dataclass(frozen=True)
class TopicVectors:
    """A topic with its texts (and their headlines) embedded and its keyword rules compiled.

    ``counters`` are the topic's counter-examples followed by ``counter_texts``' rest: in a desk, the other
    topics' examples (see :func:`desk_siblings`).
    """

    topic: Topic
    desc: Vectors
    examples: Vectors
    counters: Vectors
    rules: KeywordRules
    names: KeywordRules
    example_heads: Vectors
    counter_heads: Vectors
    counter_texts: tuple[str, ...] = ()
    """The text of each row of ``counters`` (empty: the topic's own ``counter_examples``)."""

    @property
    def counter_of(self) -> tuple[str, ...]:
        """The text of each row of ``counters``."""
        return self.counter_texts or self.topic.counter_examples

    @classmethod
    def build(cls, topic: Topic, embedder: Embedder) -> TopicVectors:
        """Embed the topic's description, examples and counter-examples in one call."""
        return cls.build_many([topic], embedder)[0]

    @classmethod
    def build_many(cls, topics: Sequence[Topic], embedder: Embedder,
                   siblings: Mapping[str, Sequence[str]] | None = None) -> list[TopicVectors]:
        """Embed every topic's texts in one call (model batches stay full).

        ``siblings`` adds counter-examples by topic id (default: :func:`desk_siblings` of ``topics``).
        """
        extra = desk_siblings(topics) if siblings is None else siblings
        texts: list[str] = []
        counters_of = []
        for topic in topics:
            counters = (*topic.counter_examples, *extra.get(topic.id, ()))
            counters_of.append(counters)
            texts += [topic_text(topic), *topic.examples, *counters]
            texts += [headline(t) for t in (*topic.examples, *counters)]
        vecs = embedder.embed(texts)
        out, at = [], 0
        for topic, counters in zip(topics, counters_of, strict=True):
            k, m = len(topic.examples), len(counters)
            block = vecs[at:at + 1 + 2 * (k + m)]
            out.append(cls(topic, block[0], block[1:1 + k], block[1 + k:1 + k + m], KeywordRules(topic),
                           name_rules(topic), block[1 + k + m:1 + 2 * k + m], block[1 + 2 * k + m:],
                           tuple(counters) if len(counters) != len(topic.counter_examples) else ()))
            at += 1 + 2 * (k + m)
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


@dataclass(frozen=True)
class TopicModel:
    """Learned weights of one topic: ``score = sigmoid(sims @ weights + bias + keyword evidence)``.

    Headline-only items are scored with ``head_weights`` and ``head_bias`` instead (the same as ``weights``
    and ``bias`` when the topic has too few examples to fit them apart).
    """

    weights: Array
    """Over :data:`SIM_NAMES`."""
    bias: float
    kind: str
    """``learned`` (logistic regression on examples) or ``prior`` (too few examples; fixed weights)."""
    positives: int
    negatives: int
    background_scores: Array = field(repr=False)
    keywords: KeywordEvidence = KeywordEvidence()
    set_aside: int = 0
    """Background articles the first fit placed in the topic, left out of the second."""
    head_weights: Array | None = None
    """Over :data:`SIM_NAMES`, for headline-only items (None: ``weights``)."""
    head_bias: float | None = None

    def shape_weights(self, short: bool) -> tuple[Array, float]:
        """The weights and bias for headline-only (``short``) or longer items."""
        if short and self.head_weights is not None:
            return self.head_weights, self.bias if self.head_bias is None else self.head_bias
        return self.weights, self.bias

    def logits(self, x: Array) -> Array:
        """Raw logits for feature rows ``x`` (shape ``(n, F)``)."""
        (w_long, b_long), (w_head, b_head) = self.shape_weights(False), self.shape_weights(True)
        lin = np.where(x[:, SHORT] > 0.5, x[:, :SIM_FEATURES] @ w_head + b_head, x[:, :SIM_FEATURES] @ w_long + b_long)
        return np.asarray(lin + x[:, KW_LOGIT], dtype=np.float64)

    def percentile_threshold(self, q: float) -> float:
        """The score that ``q`` percent of the background stays under."""
        if not len(self.background_scores):
            return 0.5
        return float(np.percentile(self.background_scores, q))


@dataclass(frozen=True)
class TrainingSet:
    """Similarity features, labels and sample weights of one topic.

    ``background`` marks background rows, ``short`` the rows that stand for headline-only items.
    """

    x: Array
    y: Array
    w: Array
    background: NDArray[np.bool_]
    short: NDArray[np.bool_]

    def subset(self, rows: NDArray[np.bool_]) -> TrainingSet:
        """The rows where ``rows`` is true."""
        return TrainingSet(self.x[rows], self.y[rows], self.w[rows], self.background[rows], self.short[rows])


def training_set(tv: TopicVectors, background: Background) -> TrainingSet:
    """Examples and counter-examples (each also headline-only, scored leave-one-out) and the background."""
    rows: list[Array] = []
    labels: list[float] = []
    weights: list[float] = []
    short: list[bool] = []
    n_ex, n_cx = len(tv.examples), len(tv.counters)
    # Positives and negatives weigh the same in total. Counter-examples, chosen by a person, weigh as much as
    # the whole background once there are five of them, and more as they grow (see COUNTERS_MAX_WEIGHT); a
    # single one (a topic's first false alarm, say) weighs a fifth of that, so one judgement cannot drag the
    # whole topic after it.
    cx_total = min(COUNTERS_MAX_WEIGHT, n_cx / COUNTERS_FULL_WEIGHT)
    neg_total = 1.0 + cx_total
    for shapes, texts, own, label, total in (
            ((tv.examples, tv.example_heads), tv.topic.examples, "ex", 1.0, neg_total),
            ((tv.counters, tv.counter_heads), tv.counter_of, "cx", 0.0, cx_total)):
        count = n_ex if own == "ex" else n_cx
        for as_head, vecs in enumerate(shapes):
            for i in range(count):
                examples = np.delete(tv.examples, i, axis=0) if own == "ex" else tv.examples
                counters = np.delete(tv.counters, i, axis=0) if own == "cx" else tv.counters
                rows.append(sim_features(vecs[i:i + 1], tv.desc, examples, counters)[0])
                labels.append(label)
                weights.append(total / (count * len(shapes)))
                short.append(bool(as_head) or is_short(Doc.of(texts[i])))
    n_bg = len(background.vectors)
    if n_bg:
        rows.extend(sim_features(background.vectors, tv.desc, tv.examples, tv.counters))
        labels.extend([0.0] * n_bg)
        weights.extend([1.0 / n_bg] * n_bg)
        short.extend(is_short(d) for d in background.docs)
    mask = np.zeros(len(rows), dtype=bool)
    mask[len(rows) - n_bg:] = True
    return TrainingSet(np.asarray(rows, dtype=np.float64).reshape(-1, SIM_FEATURES), np.asarray(labels),
                       np.asarray(weights), mask, np.asarray(short, dtype=bool))


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
    lower = np.array([-np.inf if n == "cx_max" else 0.0 for n in SIM_NAMES] + [-np.inf])
    upper = np.array([0.0 if n == "cx_max" else np.inf for n in SIM_NAMES] + [np.inf])

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


def _balanced(ts: TrainingSet, keep: NDArray[np.bool_]) -> Array:
    w = np.where(keep, ts.w, 0.0)
    pos, neg = w[ts.y == 1].sum(), w[ts.y == 0].sum()
    if pos > 0:
        w[ts.y == 1] *= neg / pos
    return w


def _fit_rows(ts: TrainingSet, n_pos: int, lam: float) -> tuple[Array, float, str, int]:
    """Weights and bias (in raw feature units) learned from ``ts``, their kind and the rows set aside."""
    x, y = ts.x, ts.y
    neg = x[y == 0]
    mu = neg.mean(axis=0) if len(neg) else np.zeros(SIM_FEATURES)
    sd = neg.std(axis=0) if len(neg) > 1 else np.ones(SIM_FEATURES)
    sd[sd < 1e-3] = 1.0
    z = (x - mu) / sd
    set_aside = 0
    if n_pos >= 2 and len(neg) >= 2:
        penalty = np.full(SIM_FEATURES, lam)
        coef, intercept = _fit_logistic(z, y, ts.w, PRIOR_WEIGHTS, penalty)
        first = sigmoid(z @ coef + intercept)
        aside = ts.background & (first >= UNLABELLED_CUT)
        if int(ts.background.sum()) >= SET_ASIDE_MIN_BACKGROUND and aside.any():
            set_aside = int(aside.sum())
            coef, intercept = _fit_logistic(z, y, _balanced(ts, ~aside), PRIOR_WEIGHTS, penalty)
        kind = "learned"
    else:
        coef = PRIOR_WEIGHTS.copy()
        bg_logits = z[y == 0] @ coef
        intercept = -float(np.quantile(bg_logits, PRIOR_BACKGROUND_QUANTILE)) if len(bg_logits) else -2.0
        kind = "prior"
    return coef / sd, intercept - float((mu / sd) @ coef), kind, set_aside


def fit(tv: TopicVectors, background: Background, *, lam: float = LAMBDA) -> TopicModel:
    """Learn one topic's model. Fewer than two examples: fixed prior weights, calibrated on the background.

    Longer items are scored by a fit on every row (both shapes); headline-only items by a second fit on the
    headline-only rows alone, when they hold at least two positives and two negatives.
    """
    ts = training_set(tv, background)
    n_pos = len(tv.examples)
    weights, bias, kind, set_aside = _fit_rows(ts, n_pos, lam)
    head_weights, head_bias = None, None
    heads = ts.subset(ts.short)
    if kind == "learned" and int((heads.y == 1).sum()) >= 2 and int((heads.y == 0).sum()) >= 2:
        head_weights, head_bias, _, _ = _fit_rows(heads, n_pos, lam)
    if kind == "learned" and not len(tv.counters):
        shaped = (weights, bias) if head_weights is None or head_bias is None else (head_weights, head_bias)
        head_weights, head_bias = _lone_headline_shape(heads, *shaped)
    bg_kw = keyword_features(tv, background.docs, background.hits)
    evidence = keyword_evidence(tv, background, bg_kw)
    model = TopicModel(weights, bias, kind, n_pos, int(len(tv.counters) + len(background.vectors)), np.zeros(0),
                       evidence, set_aside, head_weights, head_bias)
    if len(background.vectors):
        bg_sims = ts.x[ts.background]
        rows = np.zeros((len(bg_sims), F))
        rows[:, :SIM_FEATURES] = bg_sims
        rows[:, SHORT] = ts.short[ts.background]
        rows[:, KW_LOGIT] = evidence.logit(bg_kw, bg_sims[:, 4], bool(len(tv.counters)))
        model = replace(model, background_scores=sigmoid(model.logits(rows)))
    return model


def _lone_headline_shape(heads: TrainingSet, weights: Array, bias: float) -> tuple[Array, float]:
    """The headline weights and bias of a topic without counter-examples (see :data:`LONE_HEADLINE_MARGIN`).

    The bias moves up only as far as keeps every example's headline at least the margin above the boundary;
    a broad topic, whose examples lie close to everyday news, does not move at all.
    """
    pos = heads.x[heads.y == 1]
    if not len(pos):
        return weights, bias
    lowest = float((pos @ weights + bias).min())
    return weights, bias - max(0.0, lowest - LONE_HEADLINE_MARGIN)


def describe(model: TopicModel) -> dict[str, Any]:
    """The model's weights by feature name and its keyword evidence, for ``topics test`` and the API."""
    return {"kind": model.kind, "bias": round(model.bias, 3), "positives": model.positives,
            "negatives": model.negatives, "background_set_aside": model.set_aside,
            "weights": {n: round(float(w), 3) for n, w in zip(SIM_NAMES, model.weights, strict=True)},
            "headline": {"bias": round(model.shape_weights(True)[1], 3),
                         "weights": {n: round(float(w), 3)
                                     for n, w in zip(SIM_NAMES, model.shape_weights(True)[0], strict=True)}},
            "keywords": {"hit": [round(h, 2) for h in model.keywords.hit],
                         "miss": [round(m, 2) for m in model.keywords.miss]}}
