"""Keyword evidence: what a topic's keyword rules add to its logit, measured rather than fitted.

:func:`keyword_features` says which rules fire on each article; :func:`keyword_evidence` measures on the topic's
examples against the background how much a firing rule (and a miss of every name the rules give) is worth, per
item shape, as a log-likelihood ratio; :class:`KeywordEvidence` adds it, fading as the article gets closer to a
counter-example than to any example. :mod:`classify.model` explains why it is not a learned weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from classify.background import Background, TermHits, headline, is_roundup, is_short
from classify.topics import Doc, Term, topic_text

if TYPE_CHECKING:
    from classify.model import TopicVectors

Array = NDArray[np.float64]
# How fast keyword evidence fades as an article gets closer to a counter-example than to any example
# (margin in cosine units): at a margin of -0.05 about a quarter is left, at -0.15 almost nothing.
GATE_SCALE = 0.05
SMOOTHING = 0.5


def sigmoid(x: Array) -> Array:
    """The logistic function, overflow-safe."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def keyword_features(tv: TopicVectors, docs: Sequence[Doc], hits: TermHits | None = None) -> Array:
    """``kw_bool``, ``kw_any``, ``kw_all``, ``kw_name``, ``short`` and ``roundup`` of each doc, shape ``(n, 6)``.

    ``hits``, when given, must be over exactly ``docs`` (the background's).
    """
    hits = hits or TermHits(docs)
    n = len(docs)
    out = np.zeros((n, 6))
    out[:, 4] = [float(is_short(d)) for d in docs]
    out[:, 5] = [float(is_roundup(d)) for d in docs]
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
    name something and the article names none of it. Index 0 is for longer items, 1 for headlines alone. A
    roundup (:func:`classify.background.is_roundup`) that fires the rule gets neither.
    """

    hit: tuple[float, float] = (0.0, 0.0)
    miss: tuple[float, float] = (0.0, 0.0)

    def logit(self, kw: Array, margin: Array, has_counters: bool) -> Array:
        """What the keywords add for rows of :func:`keyword_features` ``kw`` with counter ``margin``."""
        short = kw[:, 4] > 0.5
        hit = np.where(short, self.hit[1], self.hit[0])
        miss = np.where(short, self.miss[1], self.miss[0])
        gate = sigmoid(margin / GATE_SCALE) if has_counters else np.ones(len(kw))
        fired = np.where(kw[:, 5] > 0.5, 0.0, hit * gate)
        return np.where(kw[:, 0] > 0.5, fired, np.where(kw[:, 3] > 0.5, 0.0, miss))


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
    # A topic without examples has its description stand in for one: the rule an editor writes names what the
    # description is about (Kobani in a sentence with its names: F1 0.648 -> 0.764; see docs/precision.md).
    measured_on = tv.topic.examples or ((topic_text(tv.topic),) if tv.topic.description else ())
    # A topic without counter-examples has nothing but its names to tell the event from same-region news, so its
    # description is one more sample of how often the event's reports name it (three examples and a description
    # that all name Kobani: a headline without the name costs 2.29 logits, not 2.08; the plain Kobani topic 0.847
    # -> 0.868, above its rule's 0.861). A topic with counter-examples measures its names on its examples alone.
    lone = bool(tv.topic.description and tv.topic.examples) and not len(tv.counters)
    desc_named = int(keyword_features(tv, [Doc.of(topic_text(tv.topic))])[0, 3]) if lone and tv.names.any else 0
    for short in (False, True):
        texts = [headline(e) if short else e for e in measured_on]
        ex_kw = keyword_features(tv, [Doc.of(t) for t in texts])
        bg = bg_kw[(bg_kw[:, 4] > 0.5) == short] if short else bg_kw[bg_kw[:, 4] < 0.5]
        if not len(bg):
            bg = bg_kw
        k, n = len(ex_kw), len(bg)
        p_pos, p_bg = _rate(int(ex_kw[:, 0].sum()), k), _rate(int(bg[:, 0].sum()), n)
        hit.append(float(np.log(p_pos / p_bg)))
        if tv.names.any:
            q_pos = _rate(int(ex_kw[:, 3].sum()) + desc_named, k + int(lone))
            q_bg = _rate(int(bg[:, 3].sum()), n)
            miss.append(min(0.0, float(np.log((1 - q_pos) / (1 - q_bg)))))
        else:
            miss.append(0.0)
    return KeywordEvidence((hit[0], hit[1]), (miss[0], miss[1]))
