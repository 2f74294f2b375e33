"""One topic's recent story members in memory, searched all at once for the closest one.

A new article is compared with every member of its topic inside the story window. Doing that one member
at a time in Python costs microseconds per member, which a busy topic (thousands of articles in 48 h)
turns into milliseconds per article. Here the members' vectors and MinHash signatures sit in two numpy
arrays: one matrix product and one comparison give every member's cosine and text resemblance, whose
maximum bounds :func:`alerts.fingerprint.similarity` from above. The exact similarity (with its name
check) is then computed only for the members whose bound reaches the cut-off, best first, stopping as
soon as no bound can beat the best found, so the decision is exactly what the one-by-one scan decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from alerts.fingerprint import PERMUTATIONS, Print, similarity

REBUILD_AFTER = 32
"""Members appended since the arrays were built that are scanned one by one before the arrays are rebuilt."""
REPORTED = 3
"""Below the cut-off, how many of the closest bounds get an exact similarity (reported, not decided on)."""


@dataclass
class Member:
    """One article of a story, as folding compares it."""

    story: str
    vector: NDArray[np.float32] | None
    fp: Print
    at_ms: int


class TopicIndex:
    """The members of one topic's stories inside the window, and where the shared stream was read up to."""

    def __init__(self) -> None:
        self.last_id = "0-0"
        self.members: list[Member] = []
        self._rows = 0  # members[:_rows] are in the arrays
        self._dim = -1
        self._vecs: NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self._sigs: NDArray[np.uint32] = np.zeros((0, PERMUTATIONS), dtype=np.uint32)

    def add(self, member: Member) -> None:
        """Append a member (scanned one by one until the next rebuild)."""
        self.members.append(member)

    def prune(self, horizon_ms: int) -> None:
        """Forget members older than ``horizon_ms``."""
        kept = [m for m in self.members if m.at_ms >= horizon_ms]
        if len(kept) != len(self.members):
            self.members = kept
            self._rows = 0

    def best(self, fp: Print, vec: NDArray[np.float32] | None, threshold: float) -> tuple[Member | None, float]:
        """The most similar member and its similarity (-1.0 when there are none).

        Exact for every member whose similarity reaches ``threshold``; below it, the best of the
        :data:`REPORTED` closest bounds.
        """
        dim = -1 if vec is None else vec.shape[0]
        if dim != self._dim or len(self.members) - self._rows > REBUILD_AFTER:
            self._build(dim)
        candidates: list[tuple[float, int, float]] = []  # (upper bound, member index, cosine)
        if self._rows:
            text = np.minimum(1.0, np.count_nonzero(self._sigs == fp.signature, axis=1) * (2.0 / PERMUTATIONS))
            cos = self._vecs @ vec if vec is not None and self._vecs.shape[1] else np.zeros(self._rows)
            upper = np.maximum(text, cos)
            pick = np.flatnonzero(upper >= threshold)
            if not pick.size:
                pick = np.argsort(upper)[-REPORTED:]
            candidates = [(float(upper[i]), int(i), float(cos[i])) for i in pick]
        for i in range(self._rows, len(self.members)):  # appended since the build: exact, one by one
            c = _cosine(vec, self.members[i].vector)
            candidates.append((2.0, i, c))  # no bound known: always examined
        candidates.sort(key=lambda c: -c[0])
        best, best_sim = None, -1.0
        for bound, i, c in candidates:
            if bound <= best_sim:
                break
            sim = similarity(fp, self.members[i].fp, c)
            if sim > best_sim:
                best, best_sim = self.members[i], sim
        return best, best_sim

    def _build(self, dim: int) -> None:
        n = len(self.members)
        self._dim = dim
        self._sigs = np.stack([m.fp.signature for m in self.members]) if n else np.zeros((0, PERMUTATIONS), np.uint32)
        vecs = np.zeros((n, max(dim, 0)), dtype=np.float32)
        for row, m in enumerate(self.members):
            if m.vector is not None and m.vector.shape == (dim,):
                vecs[row] = m.vector
        self._vecs = vecs
        self._rows = n


def _cosine(a: NDArray[np.float32] | None, b: NDArray[np.float32] | None) -> float:
    """Dot product of two unit vectors; 0.0 when either is missing or their sizes differ."""
    if a is None or b is None or a.shape != b.shape:
        return 0.0
    return float(a @ b)
