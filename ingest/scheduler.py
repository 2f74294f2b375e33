"""When each feed is polled next: adaptive intervals, publisher hints, backoff, and the queue of due feeds.

The policy (miniflux's ``ScheduleNextCheck`` in spirit):

* after a success the interval is the feed's own (``Feed.interval_s``) or, when adaptive, half the observed
  gap between its entries (``3600 / rate_per_h / 2``), never shorter than what the publisher asked for
  (RSS ``<ttl>``, ``Cache-Control: max-age``, ``Expires``), always within ``[min_interval_s, max_interval_s]``;
* a fetch whose entries were all new (the feed may have rolled past some unseen ones) shortens it fourfold;
* errors back off exponentially from ``min_interval_s`` up to ``max_backoff_s`` and stay at that cap: a
  failing feed is retried forever at the cap, never parked;
* ``Retry-After`` (429/503) is honoured (never sooner than ``min_interval_s``), capped at ``max_backoff_s``;
* every interval is shortened by up to ``jitter`` (never below the minimum) so feeds registered together do
  not stay in lockstep, while no feed waits longer than its interval.
"""

from __future__ import annotations

import email.utils
import heapq
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC

from ingest.state import FeedState
from wirewatch.settings import IngestSettings

_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-maxage|max-age)\s*=\s*\"?(\d+)", re.IGNORECASE)


def cache_hint(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the response says it stays fresh (``Cache-Control: max-age`` or ``Expires``), or None."""
    cc = headers.get("cache-control", "")
    m = _MAX_AGE.search(cc)
    if m:
        return float(m.group(1))
    if "no-cache" in cc.lower() or "no-store" in cc.lower():
        return None
    expires = headers.get("expires")
    if expires:
        try:
            when = email.utils.parsedate_to_datetime(expires)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    return None


def clamp(value: float, low: float, high: float) -> float:
    """``value`` within ``[low, high]``."""
    return max(low, min(high, value))


@dataclass(frozen=True)
class Observation:
    """What one successful fetch told us about a feed's cadence."""

    new: int = 0
    entries: int = 0
    dated_span_s: float | None = None
    """Seconds between the oldest and newest dated entry, when at least two had dates."""
    dated: int = 0
    hint_s: float | None = None


class Policy:
    """Computes next due times from a feed's state and the outcome of its last fetch."""

    def __init__(self, cfg: IngestSettings, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self._rng = rng or random.Random()

    def jitter(self, seconds: float, floor: float = 0.0) -> float:
        """``seconds`` shortened by up to ``jitter`` (never below ``floor``).

        Only shortened: a feed is never polled later than its interval says, so an item waits at most one
        interval, and never sooner than the minimum interval allows.
        """
        j = self.cfg.jitter
        return max(min(floor, seconds), seconds * (1 - self._rng.uniform(0, j))) if j else seconds

    def first_due(self, now: float, spread_s: float) -> float:
        """When a never-polled feed is first due: spread over ``spread_s`` so a cold start is not a burst."""
        return now + (self._rng.uniform(0, spread_s) if spread_s > 0 else 0.0)

    def rate(self, st: FeedState, obs: Observation, now: float) -> float | None:
        """Updated entries-per-hour estimate: entry dates at first, then a moving average of arrivals."""
        from_dates = None
        if obs.dated >= 2 and obs.dated_span_s and obs.dated_span_s > 0:
            from_dates = (obs.dated - 1) * 3600.0 / obs.dated_span_s
        if st.rate_per_h is None or not st.last_success_at:
            return from_dates
        hours = max((now - st.last_success_at) / 3600.0, 1e-3)
        arrivals = obs.new / hours
        blended = 0.7 * st.rate_per_h + 0.3 * arrivals
        # Entry dates bound the rate from below when the feed kept publishing while we polled too slowly.
        return max(blended, from_dates * 0.5) if from_dates else blended

    def after_success(self, st: FeedState, obs: Observation, now: float, fixed_interval_s: float | None) -> FeedState:
        """State after a 200 or 304: errors cleared, interval adapted, next due set."""
        cfg = self.cfg
        rate = self.rate(st, obs, now)
        if fixed_interval_s:
            interval = fixed_interval_s
        else:
            interval = 3600.0 / rate / 2 if rate and rate > 0 else cfg.default_interval_s
            if obs.hint_s:
                interval = max(interval, obs.hint_s)
        if st.last_success_at and obs.entries and obs.new >= obs.entries:
            interval = interval / 4
        interval = clamp(interval, cfg.min_interval_s, cfg.max_interval_s)
        return st.with_(errors=0, interval_s=interval, rate_per_h=rate,
                        next_due=now + self.jitter(interval, cfg.min_interval_s),
                        last_success_at=now, last_attempt_at=now)

    def backoff_s(self, errors: int) -> float:
        """Delay after ``errors`` consecutive failures: exponential from the minimum interval, capped."""
        return float(min(self.cfg.max_backoff_s, self.cfg.min_interval_s * 2.0 ** min(max(errors - 1, 0), 30)))

    def after_error(self, st: FeedState, now: float, retry_after_s: float | None = None) -> FeedState:
        """State after a failed fetch: one more error, next due after the backoff or ``Retry-After``."""
        errors = st.errors + 1
        delay = self.backoff_s(errors)
        if retry_after_s is not None:
            # Later than asked is still honouring it; sooner than the minimum interval would not be polite.
            delay = min(self.cfg.max_backoff_s, max(retry_after_s, self.cfg.min_interval_s))
        else:
            delay = self.jitter(delay)
        return st.with_(errors=errors, next_due=now + delay, last_attempt_at=now)

    def retry_soon(self, st: FeedState, now: float, delay_s: float) -> FeedState:
        """State when the fetch itself was fine but its entries could not be published yet."""
        return st.with_(next_due=now + delay_s, last_attempt_at=now)

    def is_quiet(self, st: FeedState, now: float) -> bool:
        """True when the feed has been silent for ``quiet_factor`` of its usual gaps (and at least an hour)."""
        if not st.rate_per_h or st.rate_per_h <= 0 or not st.last_success_at:
            return False
        since = st.last_new_at or st.last_success_at
        gap = 3600.0 / st.rate_per_h
        return now - since > max(self.cfg.quiet_factor * gap, 3600.0)


class DueQueue:
    """Feed ids ordered by due time. Rescheduling a feed supersedes its earlier entry (lazy deletion)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._current: dict[str, int] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._current)

    def schedule(self, feed_id: str, due: float) -> None:
        """Put ``feed_id`` at ``due`` (replacing any earlier schedule)."""
        self._seq += 1
        self._current[feed_id] = self._seq
        heapq.heappush(self._heap, (due, self._seq, feed_id))

    def discard(self, feed_id: str) -> None:
        """Forget ``feed_id``."""
        self._current.pop(feed_id, None)

    def _clean(self) -> None:
        while self._heap and self._current.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        """The earliest due time, or None when empty."""
        self._clean()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int) -> list[str]:
        """Remove and return up to ``limit`` feeds due at or before ``now``, earliest first."""
        out: list[str] = []
        while len(out) < limit:
            self._clean()
            if not self._heap or self._heap[0][0] > now:
                break
            _, _, fid = heapq.heappop(self._heap)
            del self._current[fid]
            out.append(fid)
        return out

    def count_due(self, now: float, overdue_by: float) -> tuple[int, int]:
        """How many feeds are due now, and how many have been due for longer than ``overdue_by``."""
        due = overdue = 0
        for when, seq, fid in self._heap:
            if self._current.get(fid) == seq and when <= now:
                due += 1
                if when < now - overdue_by:
                    overdue += 1
        return due, overdue
