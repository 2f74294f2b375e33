"""The consumer loop's tuning, and the one backoff every retry in it uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopConfig:
    """Tuning of a consumer loop."""

    batch_size: int = 500
    max_wait_ms: int = 200
    poll_timeout_ms: int = 200
    max_backoff_s: float = 30.0
    dlq_window: int = 200
    dlq_min_count: int = 50
    dlq_max_ratio: float = 0.9
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    poll_stall_s: float | None = None
    """A ``poll()`` that has not returned after this long is stuck (the client can wait for its group
    coordinator without a timeout); see :mod:`wirewatch.liveness`. None: ``kafka.poll_stall_s`` (60 s);
    0 disables the check. A healthy poll returns within a second; a rebalance waits for every member's
    next poll, which our batches bound to seconds."""
    member_stall_s: float | None = None
    """Not a live group member, or not consuming partitions with lag, for this long: the loop is stalled
    (:mod:`wirewatch.liveness`). None: ``kafka.member_stall_s`` (30 s); 0 disables both checks."""
    extra: dict[str, Any] = field(default_factory=dict)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt``: 1 s, 2 s, 4 s... capped at ``max_backoff_s``."""
        return min(self.max_backoff_s, 0.5 * 2.0 ** min(attempt, 10))
