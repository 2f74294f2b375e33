"""Is a consumer loop alive? Three checks, made by one watchdog thread per loop.

A worker can be running, polling and still do nothing. The checks, each with its limit:

- ``poll_stuck``: one ``poll()`` has not returned for ``poll_stall_s`` (the client can wait for its group
  coordinator without a timeout);
- ``not_member``: for ``member_stall_s`` the consumer has not been a live member of its group, that is in a
  stable generation with a heartbeat acknowledged within its session timeout, while it had a connection to
  a broker that it knows as its group coordinator. This is the poll that returns but makes no progress:
  once kafka-python's heartbeat task stops, the client keeps its assignment and its
  "stable" state, the broker evicts it, nothing tells the client, and ``poll()`` spins with zero-wait fetch
  rounds (see docs/kafka-python-coordinator.md);
- ``not_consuming``: for ``member_stall_s`` the loop kept polling partitions it owns and has not paused while
  they had records to read (high-water mark past the position), and no poll returned any.

While the client has no broker connection, every clock waits: a new process could not join either, and a
broker outage must not cost a worker its process. A broker that is back but names no group coordinator yet
(still loading its groups) holds the clocks for at most ``member_stall_s`` more. Each limit is counted from
the moment the broker answers again.

Two causes are mended in place instead; each logs ``consumer_rejoin_requested`` with its reason and counts
in ``wirewatch_bus_rejoins_total{group,reason}``, and the worker keeps its process, its model and its place
in the group:

- ``heartbeat_task_gone``: a client that believes itself a stable member while it runs no heartbeat task
  (the task ended on an error, which ``poll()`` raised once and forgot; a loop waiting to retry a batch
  swallows it) would be evicted and never find out. The watchdog asks it to rejoin, which starts a new task.
- ``join_abandoned``: a join that a metadata change started, still in flight when a poll's time ran out,
  is never awaited by the next poll (:func:`join_abandoned`); the client would sit "rebalancing" with no
  partitions for good. This happens on start-up, when the first join runs before the subscribed topics'
  metadata arrived. The loop checks after every poll and asks for the rejoin that finishes it.

A loop that is deliberately waiting (a batch in its retry backoff, its partitions paused) is neither
consuming nor expected to: only membership is checked then. A failed check is logged as
``consumer_stalled`` with the reason and counted in ``wirewatch_bus_stalls_total``; a loop on the process's
main thread (a worker process) then exits with status 75 so that its supervisor restarts it. The bound: a
worker exits at most ``limit + min(5, limit / 4)`` seconds after it was last seen alive. Nothing is lost by
exiting: offsets are committed only after a batch's outputs were acknowledged.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import MemberState

from wirewatch import metrics
from wirewatch.log import get_logger

log = get_logger("bus.liveness")
EXIT_STALLED = 75  # EX_TEMPFAIL: restart me


@dataclass(frozen=True)
class Membership:
    """What the client believes about its group membership right now."""

    state: str
    heartbeat_age_s: float | None
    assigned: int
    connected: bool = True
    coordinator: bool = True

    def live(self, session_timeout_s: float) -> bool:
        """A stable member whose last heartbeat the coordinator acknowledged within the session timeout."""
        return self.state == "stable" and self.heartbeat_age_s is not None and self.heartbeat_age_s <= session_timeout_s


def membership(consumer: KafkaConsumer, now: float | None = None) -> Membership:
    """Read the client's group state and heartbeat age (kafka-python 3.0.x internals; a unit test pins them)."""
    now = time.monotonic() if now is None else now
    state = str(getattr(consumer.group_metadata(), "state", "?")).strip("<>").lower()
    beat = getattr(getattr(consumer, "_coordinator", None), "heartbeat", None)
    age = None
    if beat is not None:
        # The coordinator resets the clock on each join; an acknowledged heartbeat moves it on.
        age = max(0.0, now - max(float(beat.last_receive), float(beat.last_reset)))
    manager = getattr(getattr(consumer, "_client", None), "_manager", None)
    conns = list(getattr(manager, "_conns", {}).values())
    # The attribute, not coordinator_unknown(): that one may mark the coordinator dead, a side effect that
    # belongs to the polling thread.
    known = getattr(getattr(consumer, "_coordinator", None), "coordinator_id", 0) is not None
    return Membership(state, age, len(consumer.assignment()), any(getattr(c, "connected", False) for c in conns),
                      known)


def join_abandoned(consumer: KafkaConsumer) -> bool:
    """True when the client is in the middle of a join that no ``poll()`` will ever finish (kafka-python 3.0.x).

    ``poll()`` drives a join only while ``need_rejoin()`` holds. A rejoin that a metadata change asked for
    (the assignment snapshot differs from the metadata snapshot, as on every start: the first join runs
    before the subscribed topics' metadata arrived) holds only until the leader computes the new assignment,
    which makes the two snapshots equal again. When the poll's time runs out while that join is still in
    flight, the next poll sees no rejoin needed and never awaits it: the client stays "rebalancing" with no
    partitions, sends no heartbeat, and the broker evicts it. Read only from the polling thread, between polls.
    """
    coordinator: Any = getattr(consumer, "_coordinator", None)
    if getattr(coordinator, "state", None) is not MemberState.REBALANCING or coordinator._heartbeat_closed:
        return False
    return not coordinator.need_rejoin()


def heartbeat_gone(consumer: KafkaConsumer) -> bool:
    """True when the client runs no heartbeat task although nothing closed it (kafka-python 3.0.x internals).

    Only a rejoin (``ensure_active_group``) starts a new one; until then a "stable" client is evicted after its
    session timeout and never told.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if getattr(coordinator, "_heartbeat_closed", True):
        return False
    task = getattr(coordinator, "_heartbeat_loop_future", False)  # False: not a client we know how to read
    return task is None or bool(getattr(task, "is_done", False))


class Liveness:
    """The watchdog of one loop. The loop reports its polls; :meth:`check` decides; :meth:`start` runs it."""

    def __init__(self, group: str, *, poll_stall_s: float, member_stall_s: float, session_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.group = group
        self.poll_stall_s = poll_stall_s
        self.member_stall_s = member_stall_s
        self.session_timeout_s = session_timeout_s
        self._clock = clock
        self.poll_since: float | None = None
        self.waiting = False
        self._consumer: KafkaConsumer | None = None
        self._live_at = clock()
        self._offline_at: float | None = None
        self._unknown_since: float | None = None
        self._rejoined_at: float | None = None
        self._lag_since: float | None = None
        self._lag_checked = 0.0
        self._stop = threading.Event()

    # -- what the loop reports (from its own thread) -----------------------------------------------------
    def watch(self, consumer: KafkaConsumer) -> None:
        """Begin checking ``consumer``'s membership; it has until ``member_stall_s`` from now to join."""
        self._consumer = consumer
        self._live_at = self._clock()

    def polled(self, consumer: KafkaConsumer, got: int) -> None:
        """A poll of the batch loop returned ``got`` records; look at the lag at most once a second."""
        now = self._clock()
        if got:
            self._lag_since = None
            return
        if now - self._lag_checked < 1.0:
            return
        self._lag_checked = now
        if _has_lag(consumer):
            self._lag_since = self._lag_since or now
        else:
            self._lag_since = None

    # -- the verdict -------------------------------------------------------------------------------------
    def check(self, now: float | None = None) -> str | None:
        """The reason this loop is not alive (``poll_stuck``, ``not_member``, ``not_consuming``), or None."""
        now = self._clock() if now is None else now
        consumer = self._consumer
        seen: Membership | None = None
        if consumer is not None:
            try:
                seen = membership(consumer, now)
            except (KafkaError, AttributeError, RuntimeError):
                seen = Membership("?", None, 0)
            self._hold(seen, now)
            if seen.state == "stable":
                self.mend(consumer, now)
        held = self._offline_at or 0.0
        since = self.poll_since
        if self.poll_stall_s and since is not None and now - max(since, held) > self.poll_stall_s:
            return "poll_stuck"
        if not self.member_stall_s or seen is None:
            return None
        if seen.live(self.session_timeout_s):
            self._live_at = now
        elif now - max(self._live_at, held) > self.member_stall_s:
            return "not_member"
        lag_since = self._lag_since
        if not self.waiting and lag_since is not None and now - max(lag_since, held) > self.member_stall_s:
            return "not_consuming"
        return None

    def mend(self, consumer: KafkaConsumer, now: float | None = None, *, error: str | None = None) -> bool:
        """Ask a client without a heartbeat task to rejoin; True when it has none (whether asked now or lately).

        Asks at most once a session timeout. The loop calls it with ``error`` when ``poll()`` raised something
        that is not Kafka's: kafka-python raises a dead heartbeat task's error that way, once.
        """
        now = self._clock() if now is None else now
        try:
            gone = heartbeat_gone(consumer)
        except (AttributeError, RuntimeError):
            return False
        if not gone:
            return False
        if self._rejoined_at is None or now - self._rejoined_at >= self.session_timeout_s:
            self._rejoined_at = now
            # A flag the polling thread reads on its next poll, as kafka-python's own IO callbacks set it.
            consumer._coordinator.request_rejoin()
            metrics.BUS_REJOINS.labels(self.group, "heartbeat_task_gone").inc()
            log.warning("consumer_rejoin_requested", group=self.group, reason="heartbeat_task_gone", error=error)
        return True

    def resume_join(self, consumer: KafkaConsumer) -> bool:
        """Ask a client whose join was abandoned (:func:`join_abandoned`) to rejoin; True when it was.

        Called by the loop's own thread right after each ``poll()``. The next poll then awaits the join still
        in flight, or starts a new one when it had ended; either way the worker is a member again within a
        poll or two instead of being evicted.
        """
        try:
            abandoned = join_abandoned(consumer)
        except (AttributeError, RuntimeError, KafkaError):
            return False
        if abandoned:
            consumer._coordinator.request_rejoin()
            metrics.BUS_REJOINS.labels(self.group, "join_abandoned").inc()
            log.warning("consumer_rejoin_requested", group=self.group, reason="join_abandoned")
        return abandoned

    def _hold(self, seen: Membership, now: float) -> None:
        """Stop every clock while no broker answers (a restart, an outage): a new process could not do better.

        A broker that answers but names no coordinator yet (still loading its groups) holds them for at most
        ``member_stall_s`` more, so a client that never finds one is still caught.
        """
        if not seen.connected:
            self._offline_at, self._unknown_since = now, None
        elif not seen.coordinator:
            self._unknown_since = self._unknown_since or now
            if now - self._unknown_since <= self.member_stall_s:
                self._offline_at = now
        else:
            self._unknown_since = None

    def details(self) -> dict[str, Any]:
        """Fields for the log line of a failed check."""
        out: dict[str, Any] = {"live_ago_s": round(self._clock() - self._live_at, 1)}
        if self._consumer is not None:
            try:
                seen = membership(self._consumer)
                out |= {"state": seen.state, "assigned": seen.assigned, "connected": seen.connected,
                        "coordinator_known": seen.coordinator,
                        "heartbeat_age_s": None if seen.heartbeat_age_s is None else round(seen.heartbeat_age_s, 1)}
            except (KafkaError, AttributeError, RuntimeError):
                pass
        return out

    # -- the thread --------------------------------------------------------------------------------------
    def start(self, *, exit_on_stall: bool) -> Liveness:
        """Check every ``min(5, limit / 4)`` seconds in a daemon thread until :meth:`stop`."""
        limits = [x for x in (self.poll_stall_s, self.member_stall_s) if x]
        if limits:
            threading.Thread(target=self._run, args=(exit_on_stall, min(5.0, min(limits) / 4)),
                             name=f"liveness-{self.group}", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop checking (returns at once)."""
        self._stop.set()

    def _run(self, exit_on_stall: bool, every_s: float) -> None:
        reported: str | None = None
        while not self._stop.wait(every_s):
            reason = self.check()
            if reason is not None and reason != reported:
                metrics.BUS_STALLS.labels(self.group, reason).inc()
                if reason == "poll_stuck":
                    metrics.BUS_POLL_STALLS.labels(self.group).inc()
                log.error("consumer_stalled", group=self.group, reason=reason, exiting=exit_on_stall,
                          **self.details())
                if exit_on_stall:
                    os._exit(EXIT_STALLED)
            reported = reason


def _has_lag(consumer: KafkaConsumer) -> bool:
    paused = set(consumer.paused())
    for tp in consumer.assignment():
        if tp in paused:
            continue
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            pos = consumer.position(tp, timeout_ms=0)
        except KafkaError:
            continue
        if pos is not None and high > pos:
            return True
    return False
