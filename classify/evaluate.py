"""Measure topics on labelled articles, or suggest thresholds when there are no labels.

With labels: precision, recall and F1 at the configured threshold, the best threshold, and two baselines
(cosine similarity alone, the keyword query alone). Without: a threshold suggested from the background
distribution of scores (a percentile).

Labelled data: one JSON object a line with ``id``, ``title``, ``text`` and ``labels`` (topic ids).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classify.classifier import Classifier
from classify.model import FEATURES
from classify.topics import Doc
from wirewatch.records import Article, Topic
from wirewatch.scores import prf

Array = NDArray[np.float64]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_PERCENTILE = 99.0


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

    def article(self) -> Article:
        """As an Article: the text is the content, so its lead is embedded after the title."""
        return Article(id=self.id[:128] or "x", title=self.title, content=self.text or None, published_at=EPOCH,
                       fetched_at=EPOCH, feed_url="eval:")


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
        out.append(Labelled(str(obj.get("id", n)), obj.get("title", ""), str(text), tuple(labels or ()),
                            labels is not None))
    if not out:
        raise DataError(f"{path}: no articles")
    return out


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
    suggested_threshold: float | None = None
    suggested_from: str = "labels"
    curve: dict[str, list[float]] = field(default_factory=dict, repr=False)


@dataclass
class Report:
    """Per-topic figures and macro averages."""

    topics: dict[str, TopicReport]
    macro: dict[str, float | None]
    labelled: bool
    articles: int

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: ``topics.<id>`` and ``macro`` (curves left out)."""
        topics = {tid: {k: v for k, v in asdict(r).items() if k != "curve"} for tid, r in self.topics.items()}
        return {"topics": topics, "macro": self.macro, "labelled": self.labelled, "articles": self.articles}


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
              chunk: int = 64) -> NDArray[np.float32]:
    """Embed ``articles`` in chunks, reporting progress."""
    parts = []
    for start in range(0, len(articles), chunk):
        part = articles[start:start + chunk]
        parts.append(classifier.embed([classifier.text_of(a) for a in part]))
        if progress:
            progress(len(part))
    return np.concatenate(parts) if parts else np.zeros((0, classifier.embedder.dim), np.float32)


def evaluate(classifier: Classifier, topics: Sequence[Topic], items: Sequence[Labelled], *,
             progress: Callable[[int], None] | None = None, percentile: float = DEFAULT_PERCENTILE) -> Report:
    """Score ``items`` against ``topics`` (enabled or not) and compute the figures."""
    articles = [it.article() for it in items]
    vectors = embed_all(classifier, articles, progress)
    docs = [Doc.of(classifier.text_of(a)) for a in articles]
    index = classifier.index_for(topics)
    scores = index.score(vectors, docs)
    labelled = any(it.has_labels for it in items)
    desc_i, ex_i, kw_i = FEATURES.index("desc"), FEATURES.index("ex_max"), FEATURES.index("kw_bool")
    reports: dict[str, TopicReport] = {}
    for col, topic in enumerate(index.topics):
        s = scores.scores[:, col]
        rep = TopicReport(threshold=topic.threshold, predicted=int((s >= topic.threshold).sum()))
        if labelled:
            truth = np.array([topic.id in it.labels for it in items])
            rep.positives = int(truth.sum())
            rep.precision, rep.recall, rep.f1 = (round(x, 4) for x in prf(s >= topic.threshold, truth))
            thr, f1, rep.curve = best_threshold(s, truth)
            rep.best_threshold, rep.best_f1 = thr, round(f1, 4)
            rep.suggested_threshold = thr
            cosine = np.maximum(scores.features[:, col, desc_i], scores.features[:, col, ex_i])
            rep.cosine_best_f1 = round(best_threshold(cosine, truth)[1], 4)
            if not index.entries[col][0].rules.empty:
                rep.keyword_f1 = round(prf(scores.features[:, col, kw_i] > 0.5, truth)[2], 4)
        else:
            rep.suggested_threshold = round(float(np.percentile(s, percentile)), 4)
            rep.suggested_from = f"background p{percentile:g}"
        reports[topic.id] = rep
    return Report(reports, _macro(reports, labelled), labelled, len(items))


def _macro(reports: dict[str, TopicReport], labelled: bool) -> dict[str, float | None]:
    def mean(name: str) -> float | None:
        vals = [getattr(r, name) for r in reports.values() if getattr(r, name) is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    names = ("precision", "recall", "f1", "best_f1", "cosine_best_f1", "keyword_f1") if labelled else ()
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
