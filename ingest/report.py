"""What one poll did, as the flow returns it (for logs, tests and the bench)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PollReport:
    """What one poll did: its outcome label and how many entries met each fate."""

    feed_id: str
    outcome: str
    new: int = 0
    updated: int = 0
    seen: int = 0
    busy: int = 0
    stale: int = 0
    invalid: int = 0
    error: str = ""
    unchanged: bool = False
    """True when the body was byte-identical to the last one read, so it was not parsed again."""
