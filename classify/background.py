"""The background every topic is calibrated against, and the keyword index over it.

The background is a thousand everyday feed-shaped articles the project ships (``classify/data/background.jsonl``),
each also presented headline-only (:func:`with_headlines`), embedded once per model and cached on disk. A
topic's model learns what "everyday news" looks like from it, in both shapes; :class:`TermHits` answers which
background articles a keyword term fires on, each term looked up once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from classify.embedder import Embedder, Vectors, read_vector_file, write_vector_file
from classify.topics import Doc, Term


def headline(text: str) -> str:
    """The first line of ``text``: how a headline-only feed would have delivered it."""
    return text.strip().split("\n", 1)[0].strip()


def is_short(doc: Doc) -> bool:
    """True when ``doc`` is a headline alone (articles join title, summary and content with newlines)."""
    return "\n" not in doc.text.strip()


# A newsletter's roundup headline: a short label, a colon, then three or more stories separated by commas or
# semicolons ("Morning Mail: Battle for Kobani, Afghan's forced deportation, AFP asked to investigate Morrison").
_ROUNDUP = re.compile(r"^([^:]{2,40}?)\s*:\s+(.+)$")
_ROUNDUP_SPLIT = re.compile(r"[,;]\s+")
ROUNDUP_LABEL_WORDS = 5
ROUNDUP_MIN_STORIES = 3
ROUNDUP_STORY_WORDS = 12


def is_roundup(doc: Doc) -> bool:
    """True when ``doc``'s headline lists several stories after a label, as a newsletter's roundup does.

    A roundup that names a topic's place or actor is about none of its stories in particular, so its keyword
    rules count for nothing (:class:`classify.evidence.KeywordEvidence`); its similarity still counts.
    """
    m = _ROUNDUP.match(headline(doc.text))
    if m is None or len(m.group(1).split()) > ROUNDUP_LABEL_WORDS:
        return False
    stories = [p for p in _ROUNDUP_SPLIT.split(m.group(2)) if p.strip()]
    return len(stories) >= ROUNDUP_MIN_STORIES and all(len(p.split()) <= ROUNDUP_STORY_WORDS for p in stories)


def with_headlines(texts: Sequence[str]) -> list[str]:
    """``texts`` followed by the headline of each text that has more than one."""
    return list(texts) + [headline(t) for t in texts if headline(t) != t.strip()]


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
    vectors = read_vector_file(path, len(texts), embedder.dim)
    if vectors is None:
        vectors = embedder.embed(texts)
        write_vector_file(path, vectors)
    return Background(vectors, tuple(Doc.of(t) for t in texts))


def shipped_background_texts() -> list[str]:
    """The background articles the project ships (written for it; everyday news across desks)."""
    raw = resources.files("classify").joinpath("data/background.jsonl").read_text()
    out = []
    for line in raw.splitlines():
        if line.strip():
            item = json.loads(line)
            out.append(f"{item['title']}\n{item.get('summary', '')}".strip())
    return out
