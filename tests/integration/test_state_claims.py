"""Claims and locks are given back only by their owner, in one step, and leases run on Redis's clock
(issue 12, item 5), against the real redis-server.

A competitor acts right after the first command a release sends: with a read-then-delete release that is
between the read and the delete, the only moment the race needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from alerts.digest import DigestScheduler
from alerts.stories import StoryFolder
from wirewatch import state
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class Interleaved(redis.Redis):
    """A client that runs ``after_next`` right after its next command returns (once)."""

    after_next: Callable[[], Any] | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().execute_command(*args, **options)
        hook, self.after_next = self.after_next, None
        if hook is not None:
            hook()
        return result


def test_a_release_never_deletes_the_claim_someone_took_after_ours_expired(settings: Settings) -> None:
    mine = Interleaved.from_url(settings.redis_url)
    theirs = state.Ledger(state.connect(settings), ttl_s=3600)
    ledger = state.Ledger(mine, ttl_s=3600)
    k = state.key(settings, "alerts", "sent", "k1")
    assert ledger.claim(k, "w1", lease_s=0.2)
    time.sleep(0.3)  # w1 stalled past its lease: w2 may take over, and does, just as w1 gives up
    took: list[bool] = []
    mine.after_next = lambda: took.append(theirs.claim(k, "w2", lease_s=30))
    ledger.release(k, "w1")
    assert took == [True]
    value = state.connect(settings).get(k)
    assert value is not None and value.startswith(b"claim:w2:"), f"w2's claim was deleted ({value!r})"
    assert not theirs.claim(k, "w3", lease_s=30), "w2's live claim must still exclude others"
    ledger.release(k, "w3")  # not the owner: nothing happens
    assert state.connect(settings).get(k) == value


def test_a_digest_builder_never_deletes_the_lock_another_took_after_its_own_expired(settings: Settings) -> None:
    mine = Interleaved.from_url(settings.redis_url)
    other = state.connect(settings)
    sched = DigestScheduler(settings, mine, stories=StoryFolder(other, settings), subscription=lambda _: None,
                            topic_name=str, submit=lambda _: None)
    lock = state.key(settings, "alerts", "held", "lock", "desk")
    sched.queue.postpone("desk", datetime.now(UTC) - timedelta(seconds=1))

    def slow_build(sub_id: str, now: datetime) -> int:
        # the build outlived the lock; another worker's scheduler took it just as this one lets go
        mine.after_next = lambda: other.set(lock, "other-worker", px=30_000)
        return 0

    sched._build = slow_build  # type: ignore[method-assign]
    assert sched.run_once(datetime.now(UTC)) == 0
    assert other.get(lock) == b"other-worker", "the other worker's lock was deleted"
    other.delete(lock)
    sched._build = lambda sub_id, now: 0  # type: ignore[method-assign]
    sched.run_once(datetime.now(UTC))
    assert other.get(lock) is None, "our own lock is given back"


def test_a_lease_stamped_by_a_clock_that_runs_behind_still_excludes_others(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    r = state.connect(settings)
    k = state.key(settings, "alerts", "sent", "k2")
    real = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real() - 3600)  # the claiming worker's clock is an hour behind
        assert state.Ledger(r, ttl_s=3600).claim(k, "behind", lease_s=60)
    assert not state.Ledger(r, ttl_s=3600).claim(k, "on-time", lease_s=60), \
        "a live lease looked expired to a worker whose clock is right"


def test_a_rate_window_holds_for_a_worker_whose_clock_runs_ahead(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    r = state.connect(settings)
    k = state.key(settings, "alerts", "rate", "desk")
    assert state.RateLimiter(r).allow(k, 2, 600.0)[0] and state.RateLimiter(r).allow(k, 2, 600.0)[0]
    real = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real() + 3600)  # an hour ahead: its window would start after the others'
        allowed, wait = state.RateLimiter(r).allow(k, 2, 600.0)
    assert not allowed and 500 < wait <= 600
