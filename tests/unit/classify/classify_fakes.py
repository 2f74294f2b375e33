"""In-memory stand-ins for the classify unit tests: a deterministic bag-of-words embedder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from classify.embedder import CachedEmbedder, Vectors, normalize


class BagOfWordsEmbedder:
    """Each lower-cased word hashes to a fixed random direction; a text is the normalized sum.

    Texts sharing words are similar, texts sharing none are near-orthogonal: enough to test scoring logic
    without a model. Counts calls so tests can see what the cache saved.
    """

    name = "bag-of-words"
    revision = "test"
    backend = "fake"
    dim = 64
    max_tokens = 256

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _word(self, word: str) -> Vectors:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i] += self._word(word)
            if not out[i].any():
                out[i] = self._word("")
        return normalize(out)


def fake_embedder(cache_size: int = 1000) -> CachedEmbedder:
    return CachedEmbedder(BagOfWordsEmbedder(), cache_size)
