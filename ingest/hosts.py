"""Per-host politeness: at most ``per_host_concurrency`` requests to one host at once, feeds and pages together.

Feed polls take a slot without waiting (:meth:`HostSlots.try_take`; the worker queues a feed whose host is
busy); article pages wait for one (:meth:`HostSlots.slot`). Whenever a slot frees up, page waiters are woken
and ``on_free(host)`` lets the worker start a feed it queued for that host. A poll that holds its slot while
it waits for its articles' pages lends it to them (:meth:`HostSlots.lend`): the feed's request is over, and
pages on the feed's own host should not queue behind an idle slot.

:class:`Pacer` spaces the starts of a host's page fetches by the Crawl-delay its robots.txt asks for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

PACER_HOSTS = 10_000


class HostSlots:
    """Counts requests in flight per host; see the module docstring."""

    def __init__(self, per_host: int, on_free: Callable[[str], None] | None = None) -> None:
        self.per_host = per_host
        self.on_free = on_free
        self.active: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Condition] = {}
        self._waiting: dict[str, int] = {}

    @asynccontextmanager
    async def lend(self, host: str) -> AsyncIterator[None]:
        """The caller holds a slot for ``host`` and makes no request with it while the block runs: lend it.

        The slot is given back for others (a page waiting for it is woken) and taken again on the way out,
        without waiting: the holder may be one over the limit for the moments until its own release, but it
        makes no request in them, so requests in flight never are. Nothing is lent when no slot is held.
        """
        if self.active.get(host, 0) <= 0:
            yield
            return
        self.release(host)
        try:
            yield
        finally:
            self.active[host] = self.active.get(host, 0) + 1

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


class Pacer:
    """Turns for page fetches per host, ``delay_s`` apart (robots.txt Crawl-delay), in one process.

    :meth:`turn` reserves the next turn and says how long to wait for it, or refuses (None) when that turn
    is more than ``max_wait_s`` away, so a slow host's backlog is bounded instead of growing without end.
    """

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._next: dict[str, float] = {}

    def turn(self, host: str, delay_s: float) -> float | None:
        """Seconds until this request may start (0 when the host asks no delay), or None: no turn soon enough."""
        if delay_s <= 0:
            return 0.0
        now = time.monotonic()
        at = max(now, self._next.get(host, 0.0))
        if at - now > self.max_wait_s:
            return None
        self._next[host] = at + delay_s
        if len(self._next) > PACER_HOSTS:  # hosts whose last turn is over need no memory
            self._next = {h: t for h, t in self._next.items() if t > now}
        return at - now
