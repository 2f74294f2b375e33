"""Per-host politeness: at most ``per_host_concurrency`` requests to one host at once, feeds and pages together.

Feed polls take a slot without waiting (:meth:`HostSlots.try_take`; the worker queues a feed whose host is
busy); article pages wait for one (:meth:`HostSlots.slot`). Whenever a slot frees up, page waiters are woken
and ``on_free(host)`` lets the worker start a feed it queued for that host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class HostSlots:
    """Counts requests in flight per host; see the module docstring."""

    def __init__(self, per_host: int, on_free: Callable[[str], None] | None = None) -> None:
        self.per_host = per_host
        self.on_free = on_free
        self.active: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Condition] = {}
        self._waiting: dict[str, int] = {}

    def try_take(self, host: str) -> bool:
        """Take a slot for ``host`` if one is free now."""
        if self.active.get(host, 0) >= self.per_host:
            return False
        self.active[host] = self.active.get(host, 0) + 1
        return True

    def release(self, host: str) -> None:
        """Give a slot back; wakes a page waiting for this host, else tells ``on_free``."""
        left = self.active.get(host, 1) - 1
        if left <= 0:
            self.active.pop(host, None)
        else:
            self.active[host] = left
        cond = self._waiters.get(host)
        if cond is not None and self._waiting.get(host):
            asyncio.get_running_loop().create_task(self._notify(cond))
        elif self.on_free is not None:
            self.on_free(host)

    async def _notify(self, cond: asyncio.Condition) -> None:
        async with cond:
            cond.notify(1)

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        """Hold a slot for ``host`` while the block runs (waiting for one first)."""
        if not self.try_take(host):
            cond = self._waiters.setdefault(host, asyncio.Condition())
            self._waiting[host] = self._waiting.get(host, 0) + 1
            try:
                async with cond:
                    await cond.wait_for(lambda: self.try_take(host))
            finally:
                self._waiting[host] -= 1
                if not self._waiting[host]:  # nobody else waits: forget the host
                    self._waiting.pop(host)
                    self._waiters.pop(host, None)
        try:
            yield
        finally:
            self.release(host)
