"""Measure topics on labelled articles, or suggest thresholds when there are no labels.

With labels: precision, recall and F1 at the configured threshold, the best threshold, and two baselines
(cosine similarity alone, the keyword query alone). Without: a threshold suggested from the background
distribution of scores (a percentile).

Items can be presented as feeds deliver them (see :data:`SHAPES`): the whole text, the title with the first
sentence of the text (at most :data:`FEED_SUMMARY_CHARS` characters, what most feeds carry), or the title
alone. Topics that share a desk are reported twice: each on its own, and as the desk runs them (an article
goes to its best topic only). The misses and false alarms can be listed with their evidence, and the figures
split by the items' language.

Labelled data: one JSON object a line with ``id``, ``title``, ``text`` and ``labels`` (topic ids); an optional
``language`` (else detected) and ``published`` (ISO 8601, RFC 2822 or Unix seconds: a topic with a window, ``since`` /
``until``, matches only the items published inside it, as in production; its keyword rule and cosine baselines
are measured inside the same window).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classify.classifier import Classifier
from classify.embedder import read_vector_file, write_vector_file
from classify.model import FEATURES
from classify.scorer import Scores, TopicIndex
from classify.topics import Doc
from wirewatch.records import Article, Topic
from wirewatch.scores import prf

Array = NDArray[np.float64]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_PERCENTILE = 99.0
SHAPES = ("full", "feed", "headline")
FEED_SUMMARY_CHARS = 300
EVAL_CACHE = Path("~/.cache/wirewatch/eval")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'’”]?\s+(?=[A-Z0-9\"'‘“])")


def first_sentence(text: str, limit: int = FEED_SUMMARY_CHARS) -> str:
    """The first sentence of ``text``, cut at a word boundary to at most ``limit`` characters."""
    flat = " ".join(text.split())
    if not flat:
        return ""
    sentence = _SENTENCE_END.split(flat, maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence
    return sentence[:limit].rsplit(" ", 1)[0] + "…"


class DataError(ValueError):
    """A labelled-data file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Labelled:
    """One labelled article."""

    id: str
    title: str
    text: str
    labels: tuple[str, ...]
    has_labels: bool
    language: str | None = None
    published: datetime | None = None

    def article(self, shape: str = "full") -> Article:
        """As an Article presented in ``shape`` (see :data:`SHAPES`).

        ``full``: the text is the content, so its lead is embedded after the title; ``feed``: the first sentence
        of the text is the summary; ``headline``: the title alone.

        Raises:
            ValueError: for an unknown shape.
        """
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r} (expected one of {', '.join(SHAPES)})")
        title = self.title or first_sentence(self.text)
        summary = first_sentence(self.text) if shape == "feed" else ""
        content = (self.text or None) if shape == "full" else None
        return Article(id=self.id[:128] or "x", title=title, summary=summary, content=content,
                       published_at=self.published or EPOCH, fetched_at=EPOCH, feed_url="eval:",
                       language=self.language, published_estimated=self.published is None)


def load_labelled(path: Path) -> list[Labelled]:
    """Read a JSON-lines file of labelled articles.

    Raises:
        DataError: when the file is missing, or a line is not a JSON object with a string ``title`` (the
            message names the line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"data file not found: {path}") from exc
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("title", ""), str):
            raise DataError(f"{path}:{n}: expected an object with a string 'title'")
        labels = obj.get("labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise DataError(f"{path}:{n}: 'labels' must be a list of topic ids")
        text = obj.get("text") or obj.get("summary") or ""
        if not obj.get("title") and not text:
            raise DataError(f"{path}:{n}: no title and no text")
        language = obj.get("language")
        out.append(Labelled(str(obj.get("id", n)), obj.get("title", ""), str(text), tuple(labels or ()),
                            labels is not None, language if isinstance(language, str) and language else None,
                            _published(obj.get("published", obj.get("published_at")), path, n)))
    if not out:
        raise DataError(f"{path}: no articles")
    return out


def _published(value: Any, path: Path, n: int) -> datetime | None:
    """An item's publication time: ISO 8601, a feed's RFC 2822 date or Unix seconds; naive means UTC."""
    if value is None or value == "":
        return None
    when: datetime | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            when = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(value.strip())
        if when is None:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                when = parsedate_to_datetime(value)
    if when is None:
        raise DataError(f"{path}:{n}: 'published' must be an ISO 8601 date or date-time (or an RFC 2822 date, or "
                        f"Unix seconds), not {value!r}")
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass
class TopicReport:
    """The figures of one topic."""

    threshold: float
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    best_threshold: float | None = None
    best_f1: float | None = None
    positives: int = 0
    predicted: int = 0
    cosine_best_f1: float | None = None
    keyword_f1: float | None = None
    desk: str | None = None
    desk_precision: float | None = None
    desk_recall: float | None = None
    desk_f1: float | None = None
    nearest_f1: float | None = None
    """In a desk: F1 of a naive peer that sends every item to the desk topic with the closest example."""
    outside_window: int = 0
    """Items published outside the topic's window (``since``/``until``): never matched, by any of the above."""
    suggested_threshold: float | None = None
    suggested_from: str = "labels"
    curve: dict[str, list[float]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ErrorItem:
    """One miss or false alarm of a topic, with the evidence a person needs to see why."""

    kind: str
    """``miss`` (labelled for the topic, not matched) or ``false alarm`` (matched, not labelled)."""
    topic_id: str
    item_id: str
    text: str
    score: float
    closest: str
    closest_kind: str
    similarity: float
    counter_example: str | None
    counter_margin: float | None
    keywords: tuple[str, ...]
    outranked_by: str | None = None
    """In a desk: the topic the article went to instead."""
    keyword_logit: float = 0.0
    """What the keyword evidence added to the logit."""
    roundup: bool = False
    """A newsletter roundup: the rule's firing was not counted."""
    language: str | None = None
    """The item's language, given or detected."""
    unread: bool = False
    """In a language the model does not read: the keyword evidence was not faded by the counter margin."""


@dataclass
class Report:
    """Per-topic figures and macro averages for items of one shape."""

    topics: dict[str, TopicReport]
    macro: dict[str, float | None]
    labelled: bool
    articles: int
    shape: str = "full"
    errors: list[ErrorItem] = field(default_factory=list)
    languages: dict[str, dict[str, float | int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: ``topics.<id>``, ``macro``, ``languages`` and ``errors`` (curves left out)."""
        topics = {tid: {k: v for k, v in asdict(r).items() if k != "curve"} for tid, r in self.topics.items()}
        return {"shape": self.shape, "topics": topics, "macro": self.macro, "labelled": self.labelled,
                "articles": self.articles, "languages": self.languages,
                "errors": [asdict(e) for e in self.errors]}


def best_threshold(scores: Array, truth: NDArray[np.bool_]) -> tuple[float, float, dict[str, list[float]]]:
    """The threshold with the highest F1 (midway to the next lower score), that F1, and the PR curve."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], truth[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(s) + 1)
    precision = tp / k
    recall = tp / max(int(truth.sum()), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    # Only cut between distinct scores: ties cannot be split by a threshold.
    last_of_tie = np.append(s[1:] < s[:-1], True)
    f1_cut = np.where(last_of_tie, f1, -1.0)
    i = int(np.argmax(f1_cut))
    nxt = float(s[i + 1]) if i + 1 < len(s) else 0.0
    thr = (float(s[i]) + nxt) / 2
    curve = {"precision": precision[last_of_tie].round(4).tolist(), "recall": recall[last_of_tie].round(4).tolist(),
             "threshold": s[last_of_tie].round(4).tolist()}
    return round(thr, 4), float(f1_cut[i]), curve


def embed_all(classifier: Classifier, articles: Sequence[Article], progress: Callable[[int], None] | None = None,
              chunk: int = 64, cache_dir: Path | None = None) -> NDArray[np.float32]:
    """Embed ``articles`` in chunks, reporting progress.

    With ``cache_dir`` the vectors are kept in one file per model, backend and exact set of texts, so running
    the same evaluation again (new topic wording, new thresholds) reads them back instead of embedding the
    whole set anew. A cache file that cannot be read or written is ignored; the vectors are embedded again.
    """
    texts = [classifier.text_of(a) for a in articles]
    path = None
    if cache_dir is not None:
        emb = classifier.embedder
        digest = hashlib.sha256("\x00".join([emb.name, emb.revision, emb.backend, *texts]).encode()).hexdigest()
        path = cache_dir.expanduser() / f"{digest[:24]}.npy"
        cached = read_vector_file(path, len(texts), emb.dim)
        if cached is not None:
            if progress:
                progress(len(texts))
            return cached
    vectors = _embed_chunks(classifier, texts, progress, chunk)
    if path is not None:
        write_vector_file(path, vectors)
    return vectors


def _embed_chunks(classifier: Classifier, texts: Sequence[str], progress: Callable[[int], None] | None,
                  chunk: int) -> NDArray[np.float32]:
    parts = []
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        parts.append(classifier.embed(part))
        if progress:
            progress(len(part))
    return np.concatenate(parts) if parts else np.zeros((0, classifier.embedder.dim), np.float32)


def evaluate(classifier: Classifier, topics: Sequence[Topic], items: Sequence[Labelled], *,
             progress: Callable[[int], None] | None = None, percentile: float = DEFAULT_PERCENTILE,
             shape: str = "full", errors: bool = False, languages: bool = False,
             cache_dir: Path | None = None) -> Report:
    """Score ``items`` presented in ``shape`` against ``topics`` (enabled or not) and compute the figures.

    ``errors`` lists every miss and false alarm with its evidence; ``languages`` splits the figures by the
    items' language (given, else detected); ``cache_dir`` keeps the items' vectors (see :func:`embed_all`).

    Raises:
        ValueError: for an unknown shape.
    """
    from wirewatch.language import detect

    articles = [it.article(shape) for it in items]
    vectors = embed_all(classifier, articles, progress, cache_dir=cache_dir)
    # As ingest does: the item's declared language, else the one detected from what the feed would deliver.
    langs = [it.language or detect(a.text()) for it, a in zip(items, articles, strict=True)]
    docs = [Doc.of(classifier.text_of(a), lang, it.published)
            for it, a, lang in zip(items, articles, langs, strict=True)]
    index = classifier.index_for(topics)
    scores = index.score(vectors, docs)
    labelled = any(it.has_labels for it in items)
    passed = _passed_matrix(scores, index)
    peer = nearest_example_peer(scores.features[:, :, FEATURES.index("ex_max")], [t.desk for t in index.topics])
    outside = index.outside(docs)
    reports = {topic.id: _topic_report(index, scores, col, items, labelled, percentile, passed, peer, outside)
               for col, topic in enumerate(index.topics)}
    report = Report(reports, _macro(reports, labelled), labelled, len(items), shape)
    if labelled and errors:
        report.errors = _errors(index, scores, vectors, docs, items, passed)
    if labelled and languages:
        report.languages = _by_language(index, items, langs, passed)
    return report


def nearest_example_peer(ex_max: Array, desks: Sequence[str | None]) -> NDArray[np.bool_]:
    """The naive peer a desk is measured against: every item to its desk's topic with the closest example.

    There is no threshold (a closed world: every item gets one topic per desk). ``ex_max`` is items x topics
    (cosine to each topic's closest example); topics outside a desk get nothing.
    """
    out = np.zeros(ex_max.shape, dtype=bool)
    if not len(ex_max):
        return out
    for desk in {d for d in desks if d}:
        cols = np.array([i for i, d in enumerate(desks) if d == desk])
        out[np.arange(len(ex_max)), cols[np.argmax(ex_max[:, cols], axis=1)]] = True
    return out


def _passed_matrix(scores: Scores, index: TopicIndex) -> NDArray[np.bool_]:
    """What production would match: at threshold, not vetoed and, in a desk, the desk's best topic."""
    out = np.zeros(scores.scores.shape, dtype=bool)
    for row, col in scores.passed(index.thresholds):
        out[row, col] = True
    return out


def _topic_report(index: TopicIndex, scores: Scores, col: int, items: Sequence[Labelled], labelled: bool,
                  percentile: float, passed: NDArray[np.bool_], peer: NDArray[np.bool_],
                  outside: NDArray[np.bool_]) -> TopicReport:
    desc_i, ex_i, kw_i = FEATURES.index("desc"), FEATURES.index("ex_max"), FEATURES.index("kw_bool")
    topic = index.topics[col]
    s = np.where(scores.excluded[:, col], 0.0, scores.scores[:, col])
    rep = TopicReport(threshold=topic.threshold, predicted=int((s >= topic.threshold).sum()), desk=topic.desk,
                      outside_window=int(outside[:, col].sum()))
    if not labelled:
        rep.suggested_threshold = round(float(np.percentile(s, percentile)), 4)
        rep.suggested_from = f"background p{percentile:g}"
        return rep
    truth = np.array([topic.id in it.labels for it in items])
    rep.positives = int(truth.sum())
    rep.precision, rep.recall, rep.f1 = (round(x, 4) for x in prf(s >= topic.threshold, truth))
    thr, f1, rep.curve = best_threshold(s, truth)
    rep.best_threshold, rep.best_f1 = thr, round(f1, 4)
    rep.suggested_threshold = thr
    # The baselines see what the topic sees: nothing outside its window.
    inside = ~outside[:, col]
    cosine = np.where(inside, np.maximum(scores.features[:, col, desc_i], scores.features[:, col, ex_i]), -1.0)
    rep.cosine_best_f1 = round(best_threshold(cosine, truth)[1], 4)
    if not index.entries[col][0].rules.empty:
        rep.keyword_f1 = round(prf((scores.features[:, col, kw_i] > 0.5) & inside, truth)[2], 4)
    if topic.desk:
        rep.desk_precision, rep.desk_recall, rep.desk_f1 = (round(x, 4) for x in prf(passed[:, col], truth))
        rep.nearest_f1 = round(prf(peer[:, col], truth)[2], 4)
    return rep


def _errors(index: TopicIndex, scores: Scores, vectors: NDArray[np.float32], docs: Sequence[Doc],
            items: Sequence[Labelled], passed: NDArray[np.bool_]) -> list[ErrorItem]:
    out = []
    for col, topic in enumerate(index.topics):
        truth = np.array([topic.id in it.labels for it in items])
        wrong = np.nonzero(truth != passed[:, col])[0]
        for row in sorted((int(r) for r in wrong), key=lambda r: -float(scores.scores[r, col])):
            ev = index.evidence(vectors[row], docs[row], col, scores, row)
            outranked = None
            if scores.outranked is not None and scores.outranked[row, col]:
                best = int(np.argmax(np.where(scores.excluded[row], -1.0, scores.scores[row])))
                outranked = index.topics[best].id if best != col else None
            out.append(ErrorItem(
                kind="miss" if truth[row] else "false alarm", topic_id=topic.id, item_id=items[row].id,
                text=docs[row].text, score=round(float(scores.scores[row, col]), 4), closest=ev.closest,
                closest_kind=ev.closest_kind, similarity=ev.similarity, counter_example=ev.counter_example,
                counter_margin=ev.counter_margin, keywords=ev.keywords, outranked_by=outranked,
                keyword_logit=ev.features.get("kw_logit", 0.0), roundup=ev.features.get("roundup", 0.0) > 0.5,
                language=docs[row].language, unread=bool(index.unread([docs[row]])[0])))
    return out


def _by_language(index: TopicIndex, items: Sequence[Labelled], detected: Sequence[str | None],
                 passed: NDArray[np.bool_]) -> dict[str, dict[str, float | int]]:
    """Micro-averaged figures over every topic, per language (``und`` where none could be told)."""
    langs = [lang or "und" for lang in detected]
    truth = np.array([[t.id in it.labels for t in index.topics] for it in items], dtype=bool).reshape(passed.shape)
    out: dict[str, dict[str, float | int]] = {}
    for lang in sorted(set(langs), key=lambda x: (-langs.count(x), x)):
        rows = np.array([x == lang for x in langs])
        p, r, f = prf(passed[rows].ravel(), truth[rows].ravel())
        out[lang] = {"items": int(rows.sum()), "positives": int(truth[rows].sum()), "precision": round(p, 4),
                     "recall": round(r, 4), "f1": round(f, 4)}
    return out


def _macro(reports: dict[str, TopicReport], labelled: bool) -> dict[str, float | None]:
    def mean(name: str) -> float | None:
        vals = [getattr(r, name) for r in reports.values() if getattr(r, name) is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    names = ("precision", "recall", "f1", "best_f1", "cosine_best_f1", "keyword_f1", "desk_precision",
             "desk_recall", "desk_f1", "nearest_f1") if labelled else ()
    return {n: mean(n) for n in names}


def write_thresholds(path: Path, thresholds: dict[str, float]) -> int:
    """Set each topic's ``threshold`` line in a topics TOML file in place (comments and layout kept).

    Returns how many topics were updated.
    """
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    blocks: list[list[str]] = [[]]
    for line in lines:
        if re.match(r"^\s*\[\[(classify\.)?topics?\]\]", line):
            blocks.append([])
        blocks[-1].append(line)
    updated = 0
    for block in blocks[1:]:
        ids = [m.group(1) for ln in block if (m := re.match(r'^\s*id\s*=\s*"([^"]+)"', ln))]
        if not ids or ids[0] not in thresholds:
            continue
        new = f"threshold = {thresholds[ids[0]]:.4f}\n"
        at = next((i for i, ln in enumerate(block) if re.match(r"^\s*threshold\s*=", ln)), None)
        if at is None:
            end = len(block)
            while end > 1 and not block[end - 1].strip():
                end -= 1
            block.insert(end, new)
        else:
            block[at] = new
        updated += 1
    path.write_text("".join(ln for b in blocks for ln in b), encoding="utf-8")
    return updated


def plot(report: Report, path: Path) -> None:
    """Draw each topic's precision-recall curve with the configured and suggested thresholds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(report.topics), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 4 * rows), squeeze=False)
    for ax, (tid, rep) in zip(axes.flat, report.topics.items(), strict=False):
        c = rep.curve
        if c:
            ax.plot(c["recall"], c["precision"], lw=1.5)
            for thr, style, label in ((rep.threshold, "o", "configured"), (rep.best_threshold, "*", "suggested")):
                if thr is None:
                    continue
                i = int(np.argmin(np.abs(np.array(c["threshold"]) - thr)))
                ax.plot(c["recall"][i], c["precision"][i], style, ms=10, label=f"{label} {thr:.2f}")
            ax.legend(loc="lower left", fontsize=8)
        ax.set_title(f"{tid}  F1 {rep.f1 if rep.f1 is not None else '-'}", fontsize=10)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
    for ax in list(axes.flat)[len(report.topics):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
