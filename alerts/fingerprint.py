"""Text fingerprints for story folding: MinHash of word shingles, and the names a text mentions.

Vectors from the classifier say two articles are about the same thing; they are blind to which town or
which count (the Aleppo evacuation and the Daraya evacuation embed close together). The fingerprint adds
what the words say: a MinHash resemblance for republished copy and a check that neither text names a
place or person the other does not mention at all.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

PERMUTATIONS = 64
STEM = 5
_MASK = np.uint64(0xFFFFFFFF)
_rng = np.random.default_rng(20240611)
_A = (_rng.integers(1, 2**32 - 1, PERMUTATIONS, dtype=np.uint64) | np.uint64(1))
_B = _rng.integers(0, 2**32 - 1, PERMUTATIONS, dtype=np.uint64)
_WORD = re.compile(r"[\w][\w'’-]*", re.UNICODE)
_NUMBER = re.compile(r"\d[\d,.]*")
# Capitalized words that name nothing: sentence starts, weekdays, months, honorifics, newsroom words.
_NOT_NAMES = frozenset("""
a an the and but or if in on at to of for from by with as is are was were be been it its this that these those
he she they we you i his her their our my your there here what when where who why how after before over under
new breaking update updated live exclusive report reports says said say according officials official police
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december mr mrs ms dr sir president minister prime government state city
analysis watch explainer opinion video photos comment interview review
""".split())
_OPENERS = frozenset(".!?:;\n\"“‘'(")
"""What may come right before the first word of a sentence (or of a headline)."""


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return [w.lower().strip("'’-") for w in _WORD.findall(text)]


def names(text: str) -> frozenset[str]:
    """Lower-cased capitalized words and acronyms that are not common words (rough named entities).

    A capitalized word that opens a sentence or a headline ("Thousands wait ...", "Families carrying ...")
    is only a name when the text also capitalizes it elsewhere, is an acronym, or is a kicker before a
    colon ("Homs: market reopens"); otherwise every outlet's wording would "name" different things and
    differently worded reports of one event would never fold. Taken from the same tokens as
    :func:`words`, so a text never names something it does not contain.
    """
    strong: set[str] = set()
    seen: list[str] = []
    for m in _WORD.finditer(text):
        t = m.group()
        acronym = len(t) >= 2 and t.isupper()
        if not t[:1].isupper() or not (acronym or any(c.islower() for c in t)):
            continue
        word = t.lower().strip("'’-")
        i = m.start() - 1
        while i >= 0 and text[i].isspace():
            i -= 1
        opens = i < 0 or text[i] in _OPENERS
        if not opens or acronym or text[m.end():m.end() + 1] == ":":
            strong.add(word)
        seen.append(word)
    return frozenset(w for w in seen if w and w in strong) - _NOT_NAMES


def numbers(text: str) -> frozenset[str]:
    """The numbers a text states (``1,200``, ``3.5``)."""
    return frozenset(n.rstrip(",.").replace(",", "") for n in _NUMBER.findall(text))


def _h32(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "little")


def minhash(tokens: list[str], k: int = 2) -> NDArray[np.uint32]:
    """MinHash signature of the ``k``-word shingles (single words for very short texts)."""
    shingles = {" ".join(tokens[i:i + k]) for i in range(max(1, len(tokens) - k + 1))} if tokens else {""}
    h = np.fromiter((_h32(s) for s in shingles), dtype=np.uint64, count=len(shingles))
    sig = ((_A[:, None] * h[None, :] + _B[:, None]) & _MASK).min(axis=1)
    out: NDArray[np.uint32] = sig.astype(np.uint32)
    return out


def resemblance(a: NDArray[np.uint32], b: NDArray[np.uint32]) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two signatures."""
    return float(np.count_nonzero(a == b)) / len(a)


@dataclass(frozen=True)
class Print:
    """What folding keeps of one article's text."""

    signature: NDArray[np.uint32]
    names: frozenset[str]
    vocab: frozenset[str]
    numbers: frozenset[str]

    @cached_property
    def stems(self) -> frozenset[str]:
        """The vocabulary cut to five-letter stems ("Syria" and "Syrian" are one name)."""
        return frozenset(w[:STEM] for w in self.vocab)

    @classmethod
    def of(cls, text: str) -> Print:
        """Fingerprint ``text``."""
        toks = words(text)
        vocab = frozenset(toks)
        # Keep only names that are also tokens, so odd Unicode (a combining mark splitting a word one way for
        # names and another for words) can never make a text conflict with itself.
        return cls(minhash(toks), names(text) & vocab, vocab, numbers(text))


def name_conflict(a: Print, b: Print) -> bool:
    """True when each text names something the other never mentions (different places, people, groups)."""
    only_a = {n for n in a.names if n[:STEM] not in b.stems}
    only_b = {n for n in b.names if n[:STEM] not in a.stems}
    return bool(only_a) and bool(only_b)


def similarity(a: Print, b: Print, cosine: float | None, *, conflict_penalty: float = 0.25) -> float:
    """Same-story similarity in [0, 1].

    The stronger of vector cosine and text resemblance (twice the estimated shingle Jaccard, so lightly
    edited copy counts fully). When the texts name different things, shared wording counts half (a
    template headline about another town is another event) and the result is lowered by
    ``conflict_penalty``. Measured on MRPC train and on headline pairs such as "Car bomb kills 12 in Aleppo
    market" / "... in Idlib market" (cosine 0.72); see ``wirewatch eval duplicates``.
    """
    text = min(1.0, resemblance(a.signature, b.signature) * 2.0)
    cos = cosine if cosine is not None else 0.0
    if name_conflict(a, b):
        return max(0.0, max(cos, text * 0.5) - conflict_penalty)
    return max(0.0, min(1.0, max(text, cos)))
