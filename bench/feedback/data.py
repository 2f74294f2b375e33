"""The labelled streams the feedback benchmark replays, presented as feeds deliver them.

A stream is read once and embedded once: only the topic model changes while a replay runs, so the vectors
and prepared texts are reused by every replay order and every judgement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from classify.classifier import Classifier
from classify.topics import Doc
from wirewatch.records import Article

FEED_CHARS = 300
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_EPOCH = "1970-01-01T00:00:00+00:00"


class DataMissing(FileNotFoundError):
    """A stream file or topics file that is not there; the message names it and where it is looked for."""


def feed_shaped(title: str, text: str, limit: int = FEED_CHARS) -> tuple[str, str]:
    """(title, summary) as a feed delivers an item: the title and the text's first sentence, ``limit`` in all."""
    title = " ".join(title.split())
    first = _SENTENCE_END.split(" ".join(text.split()), maxsplit=1)[0] if text.strip() else ""
    room = limit - len(title) - 1
    if len(first) > room:
        # Cut at a word boundary, as feed generators truncate descriptions.
        first = first[:max(room, 0)].rsplit(" ", 1)[0] if room > 0 else ""
    return title, first


@dataclass(frozen=True)
class Stream:
    """Labelled items in stream order, each as the Article ingest would have made of it."""

    name: str
    articles: list[Article]
    labels: list[frozenset[str]]
    ordered: bool
    """True when the file's order is time order (replayed as is); False when replays shuffle it."""

    def __len__(self) -> int:
        return len(self.articles)


def load_stream(path: Path, name: str, *, limit: int = FEED_CHARS) -> Stream:
    """Read a JSON-lines file of ``id``, ``title``, ``text``, ``labels`` (and optionally ``published``).

    Items are put in ``published`` order when every item has one (ties keep file order); otherwise the
    stream is marked unordered and each replay shuffles it.

    Raises:
        DataMissing: when the file does not exist.
        ValueError: when it holds no items.
    """
    if not path.is_file():
        raise DataMissing(f"{name}: data file not found: {path} (it is read from ../shared/eval, never copied "
                          "into the repository; pass its path with --{name})")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ordered = bool(rows) and all(r.get("published") for r in rows)
    if ordered:
        rows.sort(key=lambda r: str(r["published"]))
    if not rows:
        raise ValueError(f"{name}: no items in {path}")
    articles, labels = [], []
    for n, r in enumerate(rows):
        title, summary = feed_shaped(str(r.get("title", "")), str(r.get("text") or r.get("summary") or ""), limit)
        articles.append(article(str(r.get("id", n)), title, summary))
        labels.append(frozenset(r.get("labels") or ()))
    return Stream(name, articles, labels, ordered)


def article(item_id: str, title: str, summary: str) -> Article:
    """An Article as ingest would produce it from a feed item."""
    return Article.model_validate({"id": item_id[:128] or "x", "title": title, "summary": summary,
                                   "published_at": _EPOCH, "fetched_at": _EPOCH, "feed_url": "bench:"})


def feedback_text(a: Article) -> str:
    """The text a judgement on ``a`` adds to a topic: its title and summary, as the API's feedback route sends."""
    text = a.title.strip()
    return f"{text}\n{a.summary.strip()}" if a.summary.strip() else text


@dataclass(frozen=True)
class Embedded:
    """A stream with every item embedded once and its text prepared for keyword rules."""

    stream: Stream
    vectors: NDArray[np.float32]
    docs: list[Doc]
    feedback: list[str]
    """The text a judgement on each item sends (:func:`feedback_text`)."""

    def truth(self, topic_id: str) -> NDArray[np.bool_]:
        """Which items carry ``topic_id`` among their labels, in stream order."""
        return np.array([topic_id in lab for lab in self.stream.labels], dtype=bool)


def embed_stream(classifier: Classifier, stream: Stream, progress: Callable[[int, int], None] | None = None,
                 chunk: int = 64) -> Embedded:
    """Embed each item of ``stream`` once, as the classifier embeds an article (``text_of``)."""
    texts = [classifier.text_of(a) for a in stream.articles]
    parts = []
    for start in range(0, len(texts), chunk):
        parts.append(classifier.embed(texts[start:start + chunk]))
        if progress:
            progress(min(start + chunk, len(texts)), len(texts))
    vectors = np.concatenate(parts).astype(np.float32)
    return Embedded(stream, vectors, [Doc.of(t) for t in texts], [feedback_text(a) for a in stream.articles])
