"""Keyword rules: whole words and phrases, case aware, compared without diacritics, one spelling or several.

Keyword rules (``include_any``, ``include_all``, ``exclude``) match whole words and phrases only ("truce"
does not fire on "truces" unless written ``truce*``). They are case aware: a term written in lower case
matches any case, a term with a capital letter matches that case exactly (``US`` is not "us", ``AI`` is
not "ai"). Both sides are compared without diacritics ("Cavusoglu" finds "Çavuşoğlu", "Alep" finds "Alep"),
in any script whose words are separated by spaces, and a term may list a name's spellings:
``"Aleppo|Alep|Halep|Halab|حلب"``. ``exclude`` vetoes a topic outright; the include rules are evidence for
the topic's model.

A text is folded once into a :class:`Doc`; :class:`KeywordRules` checks one topic's rules against it and
:class:`KeywordIndex` all topics' rules against many documents at once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wirewatch.records import Topic

_WORD = re.compile(r"\w+")


class _Folding(dict[int, "int | str | None"]):
    """``str.translate`` table, filled on first sight of each character: combining marks dropped.

    Besides marks, a few letters that NFKD keeps whole are spelled as their plain forms (Turkish dotless i,
    Polish l-stroke, Nordic o-slash; Arabic tatweel dropped, alef maksura and the Persian yeh and keheh as
    the Arabic yeh and kaf), because names come written both ways.
    """

    def __missing__(self, cp: int) -> int | None:
        value = None if unicodedata.combining(chr(cp)) else cp
        self[cp] = value
        return value


_FOLD = _Folding({ord(k): v for k, v in {
    "ı": "i", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ħ": "h", "Ħ": "H", "ß": "ss",
    "\u0640": None, "ى": "ي", "ی": "ي", "ک": "ك",
}.items()})


def fold(text: str) -> str:
    """``text`` without diacritics, compatibility forms or ligatures: NFKD with the combining marks dropped.

    "Çavuşoğlu" folds to "Cavusoglu", "ﬁnal" to "final", a vowelled "حَلَب" to "حلب"; case is kept.
    """
    if text.isascii():
        return text
    return unicodedata.normalize("NFKD", text).translate(_FOLD)


@dataclass(frozen=True)
class Doc:
    """An article's text prepared once for every topic's keyword rules: folded once, split into words once.

    ``folded`` is :func:`fold` of ``text``; ``lowered`` is that case-folded. ``words`` and ``lower_words``
    are their words, the dictionary keys that single-word terms are looked up by. ``language`` is the
    article's ISO 639-1 code when known (see :class:`classify.scorer.TopicIndex` for what it changes);
    ``published`` when it was published, for the topics that have a window (:meth:`Topic.in_window`).
    """

    text: str
    words: frozenset[str]
    lower_words: frozenset[str]
    folded: str
    lowered: str
    language: str | None = None
    published: datetime | None = None

    @classmethod
    def of(cls, text: str, language: str | None = None, published: datetime | None = None) -> Doc:
        """Prepare ``text`` (in ``language`` and published at ``published``, when known)."""
        folded = fold(text)
        lowered = folded.casefold()
        words = frozenset(_WORD.findall(folded))
        lower_words = words if lowered == folded else frozenset(_WORD.findall(lowered))
        return cls(text, words, lower_words, folded, lowered, language, published)


class Spelling:
    """One way of writing a term, whole-word and case aware; a trailing ``*`` matches any word ending.

    It matches after :func:`fold` on both sides; written in lower case it matches any case (case-folded), with
    a capital it matches that case exactly.
    """

    def __init__(self, raw: str) -> None:
        self.raw = raw.strip()
        if not self.raw or not _WORD.search(self.raw):
            raise ValueError(f"keyword {raw!r} has no word characters")
        self.prefix = self.raw.endswith("*")
        body = fold(self.raw.rstrip("*").strip())
        self.case_sensitive = body != body.lower()
        if not self.case_sensitive:
            body = body.casefold()
        tokens = _WORD.findall(body)
        if not tokens:
            raise ValueError(f"keyword {raw!r} has no word characters")
        self._need = frozenset(tokens)
        if self.prefix:
            # The last token is a prefix, so it cannot prefilter by exact word.
            self._need = self._need - {tokens[-1]}
        pattern = r"\s+".join(re.escape(p) for p in body.split())
        tail = r"\w*" if self.prefix else ""
        self._re = re.compile(rf"(?<!\w){pattern}{tail}(?!\w)")
        self.simple = len(tokens) == 1 and not self.prefix and tokens[0] == body
        self.key = body
        """For a simple spelling, the word it is: a key of ``Doc.words`` or ``Doc.lower_words``."""

    def found(self, doc: Doc) -> bool:
        """True when the spelling occurs in ``doc`` as whole words."""
        words = doc.words if self.case_sensitive else doc.lower_words
        if not self._need <= words:
            return False
        if self.simple:
            return True
        return self._re.search(doc.folded if self.case_sensitive else doc.lowered) is not None


class Term:
    """A keyword or phrase, or several spellings of one name separated by ``|``; see :class:`Spelling`.

    ``"Aleppo|Alep|Halep|Halab|حلب"`` is one term (one of ``include_all``, say) that fires when any
    spelling is found; the evidence names the spelling that fired.

    Raises:
        ValueError: when a spelling has no word characters (named with its text).
    """

    def __init__(self, raw: str) -> None:
        self.raw = raw.strip()
        if "|" not in self.raw:
            self.spellings: tuple[Spelling, ...] = (Spelling(self.raw),)
            return
        parts = self.raw.split("|")
        for part in parts:
            if not _WORD.search(fold(part)):
                raise ValueError(f"keyword {raw!r}: spelling {part.strip()!r} has no word characters")
        self.spellings = tuple(Spelling(p) for p in parts)

    def match(self, doc: Doc) -> str | None:
        """The first spelling (as written) that occurs in ``doc``, or None."""
        for spelling in self.spellings:
            if spelling.found(doc):
                return spelling.raw
        return None

    def found(self, doc: Doc) -> bool:
        """True when any spelling occurs in ``doc`` as whole words."""
        return self.match(doc) is not None


@dataclass(frozen=True)
class KeywordHits:
    """What a topic's keyword rules found in one article."""

    any_hits: tuple[str, ...]
    all_hits: tuple[str, ...]
    excluded: tuple[str, ...]
    any_total: int
    all_total: int

    @property
    def fired(self) -> tuple[str, ...]:
        """The include terms that fired, for the evidence."""
        return self.all_hits + tuple(t for t in self.any_hits if t not in self.all_hits)

    @property
    def has_rules(self) -> bool:
        """True when the topic has include rules at all."""
        return bool(self.any_total or self.all_total)

    @property
    def boolean(self) -> bool:
        """The classic boolean query: every include_all term, at least one include_any term, no exclude."""
        if not self.has_rules or self.excluded:
            return False
        return len(self.all_hits) == self.all_total and (self.any_total == 0 or bool(self.any_hits))

    def features(self) -> tuple[float, float, float]:
        """(boolean, any-fired, share of include_all fired) for the topic model."""
        any_f = float(bool(self.any_hits)) if self.any_total else 0.0
        all_f = len(self.all_hits) / self.all_total if self.all_total else 0.0
        return float(self.boolean), any_f, all_f


class KeywordRules:
    """A topic's compiled keyword rules."""

    def __init__(self, topic: Topic) -> None:
        try:
            self.any = [Term(t) for t in topic.include_any]
            self.all = [Term(t) for t in topic.include_all]
            self.exclude = [Term(t) for t in topic.exclude]
        except ValueError as exc:
            raise ValueError(f"topic {topic.id!r}: {exc}") from exc

    @property
    def empty(self) -> bool:
        """True when the topic has no keyword rules."""
        return not (self.any or self.all or self.exclude)

    def check(self, doc: Doc) -> KeywordHits:
        """Apply the rules to ``doc``."""
        return KeywordHits(
            any_hits=_fired(self.any, doc),
            all_hits=_fired(self.all, doc),
            excluded=_fired(self.exclude, doc),
            any_total=len(self.any),
            all_total=len(self.all),
        )


def _fired(terms: Sequence[Term], doc: Doc) -> tuple[str, ...]:
    return tuple(m for t in terms if (m := t.match(doc)) is not None)


class KeywordIndex:
    """Every topic's keyword rules at once: each distinct term is looked up once per article.

    Single words (most terms) are found by dictionary lookups of the article's words; phrases and prefixes
    are checked one by one. Topic features then come from three sparse term-topic products, so the cost
    per article grows with its words and the number of distinct complex terms, not with topic count.
    """

    def __init__(self, rules: Sequence[KeywordRules]) -> None:
        from scipy import sparse

        self._ids: dict[str, int] = {}
        self._exact: dict[str, list[int]] = {}
        self._folded: dict[str, list[int]] = {}
        self._complex: list[tuple[int, Spelling]] = []
        rows: dict[str, tuple[list[int], list[int]]] = {"any": ([], []), "all": ([], []), "exclude": ([], [])}
        for col, r in enumerate(rules):
            for kind, terms in (("any", r.any), ("all", r.all), ("exclude", r.exclude)):
                for term in terms:
                    rows[kind][0].append(self._intern(term))
                    rows[kind][1].append(col)
        n, t = max(len(self._ids), 1), len(rules)

        def matrix(kind: str) -> Any:
            r_idx, c_idx = rows[kind]
            return sparse.csr_matrix((np.ones(len(r_idx), np.float32), (r_idx, c_idx)), shape=(n, t))

        self._any, self._all, self._exclude = matrix("any"), matrix("all"), matrix("exclude")
        self._any_total = np.array([len(r.any) for r in rules], dtype=np.float64)
        self._all_total = np.array([len(r.all) for r in rules], dtype=np.float64)
        self._has_include = (self._any_total + self._all_total) > 0
        self.size = len(self._ids)

    def _intern(self, term: Term) -> int:
        if term.raw in self._ids:
            return self._ids[term.raw]
        idx = self._ids[term.raw] = len(self._ids)
        for spelling in term.spellings:
            if spelling.simple:
                table = self._exact if spelling.case_sensitive else self._folded
                table.setdefault(spelling.key, []).append(idx)
            else:
                self._complex.append((idx, spelling))
        return idx

    def _hits(self, doc: Doc) -> list[int]:
        found: list[int] = []
        for w in doc.words:
            found += self._exact.get(w, ())
        for w in doc.lower_words:
            found += self._folded.get(w, ())
        found += [idx for idx, spelling in self._complex if spelling.found(doc)]
        return found

    def features(self, docs: Sequence[Doc]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Keyword features ``(n, topics, 3)`` (see :meth:`KeywordHits.features`) and the exclude vetoes."""
        from scipy import sparse

        n, t = len(docs), len(self._any_total)
        feats = np.zeros((n, t, 3))
        if not self.size or not n:
            return feats, np.zeros((n, t), dtype=bool)
        r_idx: list[int] = []
        c_idx: list[int] = []
        for i, doc in enumerate(docs):
            hits = set(self._hits(doc))
            r_idx += [i] * len(hits)
            c_idx += hits
        hits_m = sparse.csr_matrix((np.ones(len(r_idx), np.float32), (r_idx, c_idx)), shape=(n, self._any.shape[0]))
        any_c = np.asarray((hits_m @ self._any).todense())
        all_c = np.asarray((hits_m @ self._all).todense())
        excluded = np.asarray((hits_m @ self._exclude).todense()) > 0
        any_f = np.where(self._any_total > 0, any_c > 0, False)
        all_f = np.divide(all_c, self._all_total, out=np.zeros_like(all_c, dtype=np.float64),
                          where=self._all_total > 0)
        boolean = (self._has_include & ~excluded & (all_c >= self._all_total)
                   & ((self._any_total == 0) | (any_c > 0)))
        feats[:, :, 0], feats[:, :, 1], feats[:, :, 2] = boolean, any_f, all_f
        return feats, excluded
