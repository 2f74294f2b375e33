"""The ONNX embedder's length batching: texts sorted by token length, cut into model calls by a padded-token
budget, and put back in input order, with the same vectors (fp32, within 1e-5) as one text per call; model calls
run side by side on the threads given, with the vectors of one call after another, and a failed one raises; and
the cache in front never embeds one text twice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from classify.embedder import CachedEmbedder, Vectors, normalize
from classify.onnx_backend import OnnxEmbedder

TEXTS = [
    "Storm hits coast",
    "Central bank holds interest rates as inflation eases and policy makers wait for wage figures next month",
    "Goal!",
    "Dock workers walk out at the port of Felixstowe\nContainer traffic stopped as the strike over pay began, "
    "and shipping lines diverted vessels to Southampton and Rotterdam while talks with the operator stalled.",
    "",
    "Film festival opens with a premiere",
    "word " * 400,
    "Election campaign enters its final week as party leaders tour marginal seats",
]


def chunker(batch: int, budget: int | None) -> OnnxEmbedder:
    e = OnnxEmbedder.__new__(OnnxEmbedder)
    e._batch, e._budget = batch, budget
    return e


def test_chunks_keep_the_order_given_and_respect_batch_and_padded_token_budget() -> None:
    lengths = [10, 12, 30, 31, 60, 64, 200, 250]
    chunks = chunker(16, 128)._chunks(list(range(len(lengths))), lengths)
    assert [i for c in chunks for i in c] == list(range(len(lengths)))
    for c in chunks:
        assert len(c) == 1 or max(lengths[i] for i in c) * len(c) <= 128
    assert chunks[0] == [0, 1, 2, 3]  # 4 x 31 tokens fit; a fifth (60 wide) would not
    assert chunks[-2:] == [[6], [7]]  # a text over the budget goes alone
    assert [len(c) for c in chunker(3, None)._chunks(list(range(8)), lengths)] == [3, 3, 2]


@pytest.fixture(scope="module")
def fp32() -> OnnxEmbedder:
    from classify.embedder import load_embedder

    # The packaged model is a dependency: a missing one fails here, it is never skipped.
    inner = load_embedder(backend="onnx", cache_size=0, threads=1).inner
    assert isinstance(inner, OnnxEmbedder)
    return inner


def test_length_batches_restore_input_order_with_the_vectors_of_one_text_per_call(fp32: OnnxEmbedder) -> None:
    alone = np.stack([fp32.embed([t])[0] for t in TEXTS])
    for batch, budget in ((16, 512), (3, None), (16, 64)):
        fp32._batch, fp32._budget = batch, budget
        got = fp32.embed(TEXTS)
        np.testing.assert_allclose(got, alone, atol=1e-5)
        rev = fp32.embed(TEXTS[::-1])
        np.testing.assert_allclose(rev[::-1], alone, atol=1e-5)
    fp32._batch, fp32._budget = 32, 512


def test_unsorted_batches_give_the_same_vectors(fp32: OnnxEmbedder) -> None:
    sorted_ = fp32.embed(TEXTS)
    fp32._sort = False
    try:
        np.testing.assert_allclose(fp32.embed(TEXTS), sorted_, atol=1e-5)
    finally:
        fp32._sort = True


class Counting:
    name, revision, backend, dim, max_tokens = "fake", "0", "fake", 4, 16

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.seen += list(texts)
        return normalize(np.array([[len(t) + 1, 1, 2, 3] for t in texts], dtype=np.float32))


@pytest.mark.parametrize("size", [0, 100])
def test_identical_texts_are_embedded_once_per_call_and_once_while_cached(size: int) -> None:
    inner = Counting()
    emb = CachedEmbedder(inner, size)
    out = emb.embed(["a", "bb", "a", "a", "bb"])
    assert inner.seen == ["a", "bb"]
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[4])
    emb.embed(["a", "ccc"])
    assert inner.seen == (["a", "bb", "ccc"] if size else ["a", "bb", "a", "ccc"])


@pytest.mark.parametrize(("threads", "calls", "cores", "plan"), [
    (None, None, 2, (2, 1)),    # default on two cores: two single-threaded calls at once
    (2, None, 8, (2, 1)),
    (1, None, 8, (1, 1)),
    (16, None, 16, (4, 4)),     # at most four calls; the threads are shared out among them
    (None, 3, 8, (3, 2)),
    (2, 4, 8, (2, 1)),          # never more calls than threads
    (None, 1, 8, (1, None)),    # one call at a time: ONNX Runtime picks the threads, as before
    (6, 1, 8, (1, 6)),
])
def test_threads_are_planned_as_parallel_calls(monkeypatch: pytest.MonkeyPatch, threads: int | None,
                                               calls: int | None, cores: int, plan: tuple[int, int | None]) -> None:
    from classify import onnx_backend

    monkeypatch.setattr(onnx_backend, "available_cores", lambda: cores)
    assert onnx_backend.plan_threads(threads, calls) == plan


def test_parallel_calls_give_the_vectors_of_one_call_at_a_time_and_use_several_threads() -> None:
    import threading

    from classify.embedder import load_embedder

    one = load_embedder(backend="onnx", cache_size=0, threads=2, model_calls=1).inner
    two = load_embedder(backend="onnx", cache_size=0, threads=2, model_calls=2).inner
    assert isinstance(one, OnnxEmbedder) and isinstance(two, OnnxEmbedder)
    assert (one.calls, two.calls) == (1, 2)
    texts = [f"{t} ({i})" for i in range(6) for t in TEXTS]  # 48 texts: several model calls
    ran_on: set[str] = set()
    both_in_a_call = threading.Barrier(2, timeout=10)  # broken (and the test failed) unless two calls overlap
    run = two._run

    def recording(encodings: Sequence[object]) -> Vectors:
        name = threading.current_thread().name
        if name not in ran_on:
            ran_on.add(name)
            both_in_a_call.wait()
        return run(encodings)  # type: ignore[arg-type]

    two._run = recording  # type: ignore[method-assign]
    np.testing.assert_array_equal(two.embed(texts), one.embed(texts))
    assert len(ran_on) == 2 and all(n.startswith("onnx-call") for n in ran_on)


def test_a_failed_parallel_call_raises_from_embed() -> None:
    from classify.embedder import load_embedder

    two = load_embedder(backend="onnx", cache_size=0, threads=2, model_calls=2).inner
    assert isinstance(two, OnnxEmbedder)
    calls = 0

    def failing(encodings: Sequence[object]) -> Vectors:
        nonlocal calls
        calls += 1
        raise RuntimeError("model call failed")

    two._run = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="model call failed"):
        two.embed([f"{t} ({i})" for i in range(6) for t in TEXTS])
    assert calls >= 1
