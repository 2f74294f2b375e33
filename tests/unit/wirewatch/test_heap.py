"""The heap keeper: survivors frozen out of the collector's way, short-lived cycles collected before they are
frozen, frozen cycles still reclaimed by the full collection, and the collector's pauses measured."""

from __future__ import annotations

import gc
import weakref

from wirewatch.heap import HeapKeeper, Pauses


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_freezes_survivors_and_full_collection_reclaims_frozen_cycles() -> None:
    keeper = HeapKeeper(freeze_every_s=3600, full_every_s=3600).start()
    try:
        after_start = gc.get_freeze_count()
        assert after_start > 1000  # imports and start-up objects
        kept = [_Node() for _ in range(5000)]  # instances are tracked (dicts of atoms would not be)
        keeper.tick()
        assert gc.get_freeze_count() >= after_start + 5000  # survivors moved out of the collector's way

        a, b = _Node(), _Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        keeper.tick()  # the cycle is frozen while still referenced
        del a, b
        gc.collect()
        assert alive() is not None, "a frozen cycle is not collected by an ordinary collection"
        found = keeper.full()
        assert alive() is None and found >= 2
        assert kept[4999].other is None
    finally:
        keeper.stop()
    assert gc.get_freeze_count() == 0


def test_a_cycle_that_dies_between_two_freezes_is_collected_not_frozen() -> None:
    keeper = HeapKeeper(freeze_every_s=3600, full_every_s=3600).start()
    try:
        gc.disable()  # only the keeper and this test collect, so what the keeper finds is what it would freeze
        try:
            a, b = _Node(), _Node()
            a.other, b.other = b, a
            gc.collect(1)  # it survives a young collection: in the old generation now, not frozen yet
            alive = weakref.ref(a)
            del a, b  # garbage before the next freeze (a young collection would not find it any more)
            frozen = gc.get_freeze_count()
            found = keeper.tick()
        finally:
            gc.enable()
        assert alive() is None and found >= 2
        assert gc.get_freeze_count() >= frozen  # and the freeze still ran
    finally:
        keeper.stop()


def test_tick_runs_the_full_collection_when_due() -> None:
    keeper = HeapKeeper(freeze_every_s=3600, full_every_s=10).start()
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        keeper.tick()
        del a, b
        keeper.tick()  # not due yet: stays
        assert alive() is not None
        keeper.tick(now=keeper._last_full + 11)
        assert alive() is None
    finally:
        keeper.stop()


def test_pauses_count_and_time_each_generation_until_taken() -> None:
    keeper = HeapKeeper(freeze_every_s=3600, full_every_s=3600).start()
    try:
        assert keeper.pauses in gc.callbacks
        keeper.pauses.take()
        junk = [[_Node() for _ in range(20_000)]]  # something for a full collection to walk
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
        got = keeper.pauses.take()
        assert got["collections"][0] >= 1 and got["collections"][2] >= 2
        assert got["longest_ms"][2] > 0
        assert keeper.pauses.take()["collections"][2] == 0  # counting starts again
        del junk
    finally:
        keeper.stop()
    assert keeper.pauses not in gc.callbacks


def test_pauses_keep_the_longest_not_the_last() -> None:
    p = Pauses()
    for g, ms in ((2, 30.0), (2, 5.0), (1, 2.0)):
        p("start", {"generation": g})
        p._started -= ms / 1000
        p("stop", {"generation": g, "collected": 0, "uncollectable": 0})
    got = p.take()
    assert got["collections"] == [0, 1, 2]
    assert 30.0 <= got["longest_ms"][2] < 31 and 2.0 <= got["longest_ms"][1] < 3


def test_by_default_frozen_garbage_waits_at_most_ten_minutes() -> None:
    keeper = HeapKeeper().start()
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        keeper.tick()  # frozen while referenced
        del a, b
        keeper.tick(now=keeper._last_full + 9 * 60)
        assert alive() is not None
        keeper.tick(now=keeper._last_full + 10 * 60)
        assert alive() is None
    finally:
        keeper.stop()
