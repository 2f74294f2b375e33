"""The vectorised story index decides exactly what a one-by-one scan with :func:`similarity` decides."""

from __future__ import annotations

import random

import numpy as np
import pytest

from alerts.fingerprint import Print, similarity
from alerts.storyindex import REBUILD_AFTER, Member, TopicIndex

WORDS = ("aleppo daraya idlib homs evacuation ceasefire convoy buses rebels civilians army truce talks "
         "bombing hospital market siege corridor wounded agreement monitors").split()
THRESHOLD = 0.75


def _text(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, 9)).capitalize() + " " + rng.choice(("Aleppo", "Daraya", "Idlib"))


def _unit(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def _brute(members: list[Member], fp: Print, vec: np.ndarray | None) -> float:
    def cos(m: Member) -> float | None:
        ok = vec is not None and m.vector is not None and m.vector.shape == vec.shape
        return float(vec @ m.vector) if ok else None  # type: ignore[operator]
    return max((similarity(fp, m.fp, cos(m)) for m in members), default=-1.0)


def _members(rng: random.Random, nrng: np.random.Generator, n: int) -> list[Member]:
    out = []
    base = [_unit(nrng.normal(size=16)) for _ in range(6)]  # a few events: near vectors fold, far ones not
    for i in range(n):
        r = rng.random()
        vec = None if r < 0.1 else _unit(nrng.normal(size=8)) if r < 0.15 else \
            _unit(rng.choice(base) + nrng.normal(scale=0.3, size=16))
        out.append(Member(f"s{i % 40}", vec, Print.of(_text(rng)), i))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_best_matches_the_one_by_one_scan(seed: int) -> None:
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    index = TopicIndex()
    members = _members(rng, nrng, 300)
    for m in members[:200]:
        index.add(m)
    checked = folded = 0
    for step in range(60):
        if step == 20:  # appended after the arrays were built: scanned one by one, then rebuilt
            for m in members[200:200 + REBUILD_AFTER // 2]:
                index.add(m)
        if step == 40:
            for m in members[200 + REBUILD_AFTER // 2:]:
                index.add(m)
        copy = rng.random() < 0.5
        src = rng.choice(index.members)
        text = _text(rng) if not copy else " ".join(WORDS[:9])
        vec = None if rng.random() < 0.1 else \
            (src.vector if copy and src.vector is not None else _unit(nrng.normal(size=16)))
        fp = Print.of(text)
        best, sim = index.best(fp, vec, THRESHOLD)
        expected = _brute(index.members, fp, vec)
        assert (sim >= THRESHOLD) == (expected >= THRESHOLD)
        if expected >= THRESHOLD:
            assert sim == pytest.approx(expected, abs=1e-6)
            assert best is not None
            folded += 1
        else:
            assert sim <= expected + 1e-6
        checked += 1
    assert checked == 60 and folded > 5  # the data exercises both outcomes


def test_empty_index_and_prune() -> None:
    index = TopicIndex()
    assert index.best(Print.of("anything at all"), None, THRESHOLD) == (None, -1.0)
    rng = random.Random(1)
    for t in range(10):
        index.add(Member("s", None, Print.of(_text(rng)), t * 1000))
    index.best(Print.of("x"), None, THRESHOLD)
    index.prune(5000)
    assert [m.at_ms for m in index.members] == [5000, 6000, 7000, 8000, 9000]
    same = index.members[0].fp
    best, sim = index.best(same, None, THRESHOLD)
    assert best is index.members[0] and sim == pytest.approx(1.0)
