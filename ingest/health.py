"""Per-feed health as operators read it (``wirewatch feeds status`` and ``GET /v1/feeds/{id}/health``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ingest.scheduler import Policy
from ingest.state import FeedState
from wirewatch.records import Feed


def _iso(ts: float) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def feed_health(feed: Feed, st: FeedState | None, policy: Policy, now: float) -> dict[str, Any]:
    """One feed's health: last success, last error and why, items, next due, observed rate, quiet flag."""
    if st is None:
        st = FeedState(feed_id=feed.id, url=feed.url)
    if not feed.enabled:
        status = "disabled"
    elif not st.fetches:
        status = "pending"
    elif st.errors:
        status = "failing"
    elif policy.is_quiet(st, now):
        status = "quiet"
    else:
        status = "ok"
    return {
        "id": feed.id,
        "name": feed.name,
        "url": feed.url,
        "enabled": feed.enabled,
        "full_text": feed.full_text,
        "full_text_default": policy.cfg.full_text,  # what an unset full_text means here (ingest.full_text)
        "status": status,
        "disabled_reason": feed.disabled_reason or st.disabled_reason or None,
        "last_success": _iso(st.last_success_at),
        "last_attempt": _iso(st.last_attempt_at),
        "last_outcome": st.last_outcome or None,
        "last_error": st.last_error or None,
        "last_error_at": _iso(st.last_error_at),
        "consecutive_errors": st.errors,
        "entries": st.entries,
        "items_new": st.items_new,
        "items_updated": st.items_updated,
        "last_new_item": _iso(st.last_new_at),
        "fetches": st.fetches,
        "next_due": _iso(st.next_due) if feed.enabled else None,
        "interval_s": round(st.interval_s, 1) if st.interval_s else (feed.interval_s or None),
        "rate_per_hour": round(st.rate_per_h, 3) if st.rate_per_h is not None else None,
        "quiet": policy.is_quiet(st, now),
        "parse_problem": st.problem or None,
    }
