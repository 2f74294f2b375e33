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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classify.embedder import Embedder, Vectors
from classify.topics import Doc, KeywordRules, Term
from wirewatch.records import Topic

SIM_NAMES = ("desc", "ex_max", "centroid", "cx_max", "margin")
KEYWORD_NAMES = ("kw_bool", "kw_any", "kw_all", "kw_name", "short", "kw_logit")
FEATURES = SIM_NAMES + KEYWORD_NAMES
SIM_FEATURES = len(SIM_NAMES)
F = len(FEATURES)
KW_BOOL, KW_NAME, SHORT, KW_LOGIT = (FEATURES.index(n) for n in ("kw_bool", "kw_name", "short", "kw_logit"))
# Weights over standardized similarity features: what a fit is pulled towards, and all there is when a topic
# has fewer than two examples to learn from.
PRIOR_WEIGHTS = np.array([0.5, 1.0, 0.5, -0.5, 0.5], dtype=np.float64)
PRIOR_BACKGROUND_QUANTILE = 0.99
LAMBDA = 1.0
# Background articles that the first fit already places in the topic are set aside before the second: broad
# topics ("business") have their own articles in any everyday-news background, and calling them negatives
# teaches the model to miss half of its desk.
UNLABELLED_CUT = 0.5
# Only a background large enough to hold a broad topic's own share is searched for it; from a few dozen
# articles the fit would set aside whatever happens to share a word.
SET_ASIDE_MIN_BACKGROUND = 200
# How fast keyword evidence fades as an article gets closer to a counter-example than to any example
# (margin in cosine units): at a margin of -0.05 about a quarter is left, at -0.15 almost nothing.
GATE_SCALE = 0.05
SMOOTHING = 0.5
# Counter-examples weigh a fifth of the background each, up to four times the background in all: the
# counters of a desk topic (its siblings' examples, twenty for five topics) or of a topic an editor has
# judged for a while are the hard negatives its stream really holds, which everyday news is not.
COUNTERS_FULL_WEIGHT = 5
COUNTERS_MAX_WEIGHT = 4.0
Array = NDArray[np.float64]


def topic_text(topic: Topic) -> str:
    """The text that stands for the topic's description: its name and description."""
    return f"{topic.name}. {topic.description}".strip() if topic.description else topic.name


def headline(text: str) -> str:
    """The first line of ``text``: how a headline-only feed would have delivered it."""
    return text.strip().split("\n", 1)[0].strip()


def is_short(doc: Doc) -> bool:
    """True when ``doc`` is a headline alone (articles join title, summary and content with newlines)."""
    return "\n" not in doc.text.strip()


def with_headlines(texts: Sequence[str]) -> list[str]:
    """``texts`` followed by the headline of each text that has more than one."""
    return list(texts) + [headline(t) for t in texts if headline(t) != t.strip()]


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


_ONE_WORD = re.compile(r"\w+")


class TermHits:
    """Which of a fixed set of docs each keyword term fires on, each term looked up once (an inverted index).

    Every topic is measured against the same background; with this a topic's keyword features over two
    thousand background articles cost a few dictionary look-ups per term instead of a rule check per article.
    """

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.docs = tuple(docs)
        self._exact: dict[str, list[int]] = {}
        self._folded: dict[str, list[int]] = {}
        for i, doc in enumerate(self.docs):
            for w in doc.words:
                self._exact.setdefault(w, []).append(i)
            for w in doc.lower_words:
                self._folded.setdefault(w, []).append(i)
        self._seen: dict[str, NDArray[np.bool_]] = {}

    def __call__(self, term: Term) -> NDArray[np.bool_]:
        """A boolean per doc: does ``term`` (any of its spellings) occur in it."""
        if term.raw in self._seen:
            return self._seen[term.raw]
        out = np.zeros(len(self.docs), dtype=bool)
        for sp in term.spellings:
            index = self._exact if sp.case_sensitive else self._folded
            if sp.simple:
                out[index.get(sp.key, [])] = True
            elif sp.prefix and _ONE_WORD.fullmatch(sp.key):
                for word, docs in index.items():
                    if word.startswith(sp.key):
                        out[docs] = True
            else:
                out |= np.fromiter((sp.found(d) for d in self.docs), dtype=bool, count=len(self.docs))
        self._seen[term.raw] = out
        return out


def keyword_features(tv: TopicVectors, docs: Sequence[Doc], hits: TermHits | None = None) -> Array:
    """``kw_bool``, ``kw_any``, ``kw_all``, ``kw_name`` and ``short`` of each doc, shape ``(n, 5)``.

    ``hits``, when given, must be over exactly ``docs`` (the background's).
    """
    hits = hits or TermHits(docs)
    n = len(docs)
    out = np.zeros((n, 5))
    out[:, 4] = [float(is_short(d)) for d in docs]
    if not n or tv.rules.empty:
        return out
    rules = tv.rules

    def fired(terms: Sequence[Term]) -> NDArray[np.float64]:
        return np.stack([hits(t) for t in terms]).astype(np.float64) if terms else np.zeros((0, n))

    any_m, all_m, excl_m, name_m = fired(rules.any), fired(rules.all), fired(rules.exclude), fired(tv.names.any)
    any_hit = any_m.max(axis=0) if len(any_m) else np.zeros(n)
    all_count = all_m.sum(axis=0)
    excluded = excl_m.max(axis=0) > 0 if len(excl_m) else np.zeros(n, dtype=bool)
    if rules.any or rules.all:
        out[:, 0] = ~excluded & (all_count >= len(rules.all)) & ((not rules.any) | (any_hit > 0))
    out[:, 1] = any_hit
    out[:, 2] = all_count / len(rules.all) if rules.all else 0.0
    out[:, 3] = name_m.max(axis=0) if len(name_m) else 0.0
    return out


@dataclass(frozen=True)
class KeywordEvidence:
    """Log-likelihood ratios that a topic's keyword rules add to its logit, for long and headline-only items.

    ``hit``: when the rule (every ``include_all`` and one ``include_any`` term) fires; ``miss``: when the rules
    name something and the article names none of it. Index 0 is for longer items, 1 for headlines alone.
    """

    hit: tuple[float, float] = (0.0, 0.0)
    miss: tuple[float, float] = (0.0, 0.0)

    def logit(self, kw: Array, margin: Array, has_counters: bool) -> Array:
        """What the keywords add for rows of :func:`keyword_features` ``kw`` with counter ``margin``."""
        short = kw[:, 4] > 0.5
        hit = np.where(short, self.hit[1], self.hit[0])
        miss = np.where(short, self.miss[1], self.miss[0])
        gate = sigmoid(margin / GATE_SCALE) if has_counters else np.ones(len(kw))
        return np.where(kw[:, 0] > 0.5, hit * gate, np.where(kw[:, 3] > 0.5, 0.0, miss))


def _rate(hits: int, n: int) -> float:
    return (hits + SMOOTHING) / (n + 2 * SMOOTHING)


def keyword_evidence(tv: TopicVectors, background: Background, bg_kw: Array | None = None) -> KeywordEvidence:
    """Measure the topic's keyword rules on its examples against ``background``, per item shape.

    ``bg_kw`` is :func:`keyword_features` of the background, when the caller has it already.
    """
    if tv.rules.empty or not (tv.rules.any or tv.rules.all):
        return KeywordEvidence()
    if bg_kw is None:
        bg_kw = keyword_features(tv, background.docs, background.hits)
    hit: list[float] = []
    miss: list[float] = []
    for short in (False, True):
        texts = [headline(e) if short else e for e in tv.topic.examples]
        ex_kw = keyword_features(tv, [Doc.of(t) for t in texts])
        bg = bg_kw[(bg_kw[:, 4] > 0.5) == short] if short else bg_kw[bg_kw[:, 4] < 0.5]
        if not len(bg):
            bg = bg_kw
        k, n = len(ex_kw), len(bg)
        p_pos, p_bg = _rate(int(ex_kw[:, 0].sum()), k), _rate(int(bg[:, 0].sum()), n)
        hit.append(float(np.log(p_pos / p_bg)))
        if tv.names.any:
            q_pos, q_bg = _rate(int(ex_kw[:, 3].sum()), k), _rate(int(bg[:, 3].sum()), n)
            miss.append(min(0.0, float(np.log((1 - q_pos) / (1 - q_bg)))))
        else:
            miss.append(0.0)
    return KeywordEvidence((hit[0], hit[1]), (miss[0], miss[1]))


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


def sigmoid(x: Array) -> Array:
    """The logistic function, overflow-safe."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


@dataclass(frozen=True)
class Background:
    """Everyday articles, embedded: the negatives every topic is calibrated against."""

    vectors: Vectors
    docs: tuple[Doc, ...]
    _hits: list[TermHits] = field(default_factory=list, compare=False, repr=False)

    @property
    def hits(self) -> TermHits:
        """The background's keyword index, built on first use."""
        if not self._hits:
            self._hits.append(TermHits(self.docs))
        return self._hits[0]

    @classmethod
    def build(cls, texts: Sequence[str], embedder: Embedder, *, headlines: bool = True) -> Background:
        """Embed ``texts`` and, with ``headlines``, each one's headline alone as well."""
        texts = with_headlines(texts) if headlines else list(texts)
        return cls(embedder.embed(texts), tuple(Doc.of(t) for t in texts))

    @classmethod
    def with_vectors(cls, texts: Sequence[str], vectors: Vectors) -> Background:
        """From texts already embedded (the recent-article store)."""
        return cls(np.asarray(vectors, dtype=np.float32), tuple(Doc.of(t) for t in texts))

    def __add__(self, other: Background) -> Background:
        return Background(np.concatenate([self.vectors, other.vectors]), self.docs + other.docs)


BACKGROUND_CACHE = Path("~/.cache/wirewatch/background")


def shipped_background(embedder: Embedder, cache_dir: Path | None = None) -> Background:
    """The shipped background in both shapes, its vectors cached on disk per model, backend and text set.

    Two thousand texts take seconds to embed on a small CPU; every worker and command that classifies needs
    them, so they are embedded once per model revision and read back after that. A cache file that cannot be
    read or written is ignored (the vectors are embedded again).
    """
    texts = with_headlines(shipped_background_texts())
    key = hashlib.sha256("\n".join([embedder.name, embedder.revision, embedder.backend, *texts]).encode())
    path = (cache_dir or BACKGROUND_CACHE).expanduser() / f"{key.hexdigest()[:24]}.npy"
    try:
        vectors = np.load(path)
        if vectors.shape == (len(texts), embedder.dim):
            return Background(vectors.astype(np.float32), tuple(Doc.of(t) for t in texts))
    except (OSError, ValueError):
        pass
    background = Background(embedder.embed(texts), tuple(Doc.of(t) for t in texts))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.save(f, background.vectors)
        tmp.replace(path)
    except OSError:
        pass
    return background


def shipped_background_texts() -> list[str]:
    """The background articles the project ships (written for it; everyday news across desks)."""
    raw = resources.files("classify").joinpath("data/background.jsonl").read_text()
    out = []
    for line in raw.splitlines():
        if line.strip():
            item = json.loads(line)
            out.append(f"{item['title']}\n{item.get('summary', '')}".strip())
    return out


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
