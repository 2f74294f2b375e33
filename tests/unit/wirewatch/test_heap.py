"""The heap keeper freezes survivors and still reclaims cycles frozen before they became garbage."""

from __future__ import annotations

import gc
import weakref

from wirewatch.heap import HeapKeeper


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


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
