"""Scheduling policy: adaptive intervals within bounds, hints, roll-past, backoff capped, Retry-After."""

from __future__ import annotations

import random
from email.utils import formatdate

from ingest.scheduler import DueQueue, Observation, Policy, cache_hint
from ingest.state import FeedState
from wirewatch.settings import IngestSettings

CFG = IngestSettings(min_interval_s=60, max_interval_s=3600, default_interval_s=300, max_backoff_s=7200, jitter=0)
NOW = 1_700_000_000.0


def st(**kw: object) -> FeedState:
    return FeedState(feed_id="f", url="https://example.com/feed", **kw)  # type: ignore[arg-type]


def test_first_fetch_rate_comes_from_entry_dates_and_interval_is_half_the_gap() -> None:
    p = Policy(CFG)
    # 11 entries over 10 hours: 1 per hour -> poll every 30 minutes.
    out = p.after_success(st(), Observation(new=11, entries=11, dated_span_s=36000, dated=11), NOW, None)
    assert out.rate_per_h == 1.0 and out.interval_s == 1800 and out.next_due == NOW + 1800 and out.errors == 0


def test_interval_is_clamped_between_min_and_max() -> None:
    p = Policy(CFG)
    fast = p.after_success(st(), Observation(new=50, entries=50, dated_span_s=60, dated=50), NOW, None)
    assert fast.interval_s == 60
    slow = p.after_success(st(), Observation(new=2, entries=2, dated_span_s=30 * 86400, dated=2), NOW, None)
    assert slow.interval_s == 3600


def test_publisher_hint_lengthens_but_never_past_max() -> None:
    p = Policy(CFG)
    out = p.after_success(st(), Observation(new=11, entries=11, dated_span_s=36000, dated=11, hint_s=2700), NOW, None)
    assert out.interval_s == 2700
    out = p.after_success(st(), Observation(hint_s=86400), NOW, None)
    assert out.interval_s == 3600


def test_fetch_with_only_new_entries_is_polled_sooner() -> None:
    p = Policy(CFG)
    prev = st(rate_per_h=1.0, last_success_at=NOW - 1800)
    normal = p.after_success(prev, Observation(new=1, entries=20), NOW, None)
    rolled = p.after_success(prev, Observation(new=20, entries=20), NOW, None)
    assert rolled.interval_s < normal.interval_s
    assert rolled.interval_s >= CFG.min_interval_s


def test_304s_decay_the_rate_and_lengthen_the_interval() -> None:
    p = Policy(CFG)
    s = st(rate_per_h=6.0, last_success_at=NOW - 600)
    intervals = []
    t = NOW
    for _ in range(10):
        s = p.after_success(s, Observation(), t, None)
        intervals.append(s.interval_s)
        t = s.next_due
    assert intervals == sorted(intervals) and intervals[-1] > intervals[0]


def test_fixed_interval_wins_over_adaptive() -> None:
    out = Policy(CFG).after_success(st(), Observation(new=50, entries=50, dated_span_s=60, dated=50), NOW, 900)
    assert out.interval_s == 900


def test_backoff_doubles_and_stays_at_the_cap_forever() -> None:
    p = Policy(CFG)
    s = st()
    delays = []
    for _ in range(40):
        s = p.after_error(s, NOW)
        delays.append(s.next_due - NOW)
    assert delays[:4] == [60, 120, 240, 480]
    assert max(delays) == 7200 and delays[-1] == 7200  # never parked beyond the cap
    assert s.errors == 40


def test_retry_after_is_honoured_and_capped() -> None:
    p = Policy(CFG)
    assert p.after_error(st(), NOW, 300).next_due == NOW + 300
    assert p.after_error(st(), NOW, 10 * 86400).next_due == NOW + 7200
    assert p.after_error(st(), NOW, 1).next_due == NOW + 60  # never sooner than the minimum interval


def test_jitter_stays_within_bounds() -> None:
    p = Policy(IngestSettings(jitter=0.1), random.Random(7))
    values = [p.jitter(100) for _ in range(200)]
    assert all(90 <= v <= 100 for v in values) and len(set(values)) > 100
    assert all(p.jitter(100, floor=95) >= 95 for _ in range(100))


def test_cache_hints() -> None:
    assert cache_hint({"cache-control": "public, max-age=900"}, NOW) == 900
    assert cache_hint({"expires": formatdate(NOW + 600, usegmt=True)}, NOW) == 600
    assert cache_hint({"cache-control": "no-cache"}, NOW) is None
    assert cache_hint({"expires": "garbage"}, NOW) is None


def test_quiet_compares_with_the_feeds_own_cadence() -> None:
    p = Policy(CFG)
    busy = st(rate_per_h=6.0, last_success_at=NOW, last_new_at=NOW - 4 * 3600)
    assert p.is_quiet(busy, NOW)
    weekly = st(rate_per_h=1 / 168, last_success_at=NOW, last_new_at=NOW - 4 * 3600)
    assert not p.is_quiet(weekly, NOW)


def test_due_queue_orders_and_supersedes() -> None:
    q = DueQueue()
    q.schedule("a", 10)
    q.schedule("b", 5)
    q.schedule("a", 1)
    assert q.next_due() == 1 and len(q) == 2
    assert q.count_due(6, 2) == (2, 1)
    assert q.pop_due(6, 10) == ["a", "b"]
    q.schedule("c", 3)
    q.discard("c")
    assert q.pop_due(100, 10) == [] and q.next_due() is None
