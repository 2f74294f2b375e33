"""The ``Retry-After`` HTTP header, read the same way by the feed fetcher and the alert channels."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime


def retry_after(value: str | None, *, now: float | None = None, cap_s: float | None = None) -> float | None:
    """Seconds to wait (delta seconds or an HTTP date, never negative, at most ``cap_s``); None when absent or bad.

    ``now`` (unix seconds) is the moment an HTTP date is measured from; the current time by default.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        base = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
        seconds = max(0.0, (when - base).total_seconds())
    return seconds if cap_s is None else min(seconds, cap_s)
