"""Restart a supervised worker that its consumer group lost while work is waiting.

A worker process can be alive and still do nothing: its consumer was evicted from the group (missed
heartbeats on a starved machine, a client stuck in a rebalance) and never rejoined. Nothing crashes, so
restarts never happen, and the partitions it held wait. The watchdog compares the supervisor's children
with the members the group coordinator reports (each consumer's client id ends in its host name and pid):
a child of a consumer role that has been absent from its group for ``stall_s`` while the group has lag is
restarted (SIGTERM, then SIGKILL after the drain timeout), logged as ``worker_stalled`` and counted in
``wirewatch_ops_stalls_total``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping

from kafka.errors import KafkaError

from wirewatch import metrics
from wirewatch.log import get_logger
from wirewatch.ops.lag import Broker, pipeline_topics
from wirewatch.ops.supervisor import Supervisor
from wirewatch.settings import Settings

log = get_logger("ops.watchdog")

# The consumer group of each consumer role (classify.worker.GROUP and alerts.worker.GROUP; a test checks).
ROLE_GROUPS = {"classify": "wirewatch-classify", "alerts": "wirewatch-alerts"}


def member_pids(client_ids: list[str], host: str | None = None) -> set[int]:
    """Pids of the group members running on ``host`` (client ids ``...-<host>-<pid>``)."""
    host = host or socket.gethostname()
    out = set()
    for cid in client_ids:
        head, _, pid = cid.rpartition("-")
        if pid.isdigit() and head.endswith(f"-{host}"):
            out.add(int(pid))
    return out


class GroupWatchdog:
    """Checks every ``interval_s``; see the module docstring."""

    def __init__(self, settings: Settings, supervisor: Supervisor, *, role_groups: Mapping[str, str] | None = None,
                 interval_s: float = 15.0, stall_s: float = 60.0) -> None:
        self._settings = settings
        self._sup = supervisor
        self._groups = dict(role_groups or ROLE_GROUPS)
        self._interval = interval_s
        self._stall = stall_s
        self._absent_since: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-watchdog", daemon=True)

    def start(self) -> GroupWatchdog:
        """Begin watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (returns at once)."""
        self._stop.set()

    def check_once(self, broker: Broker, now: float | None = None) -> list[str]:
        """Look once; returns the roles restarted."""
        now = time.monotonic() if now is None else now
        pids = self._sup.pids()
        uptimes = self._sup.uptimes()
        wanted = {g for role, g in self._groups.items() if any(r.split("-")[0] == role for r in pids)}
        if not wanted:
            return []
        info = broker.describe(sorted(wanted))
        members = {g: member_pids(list(gi.client_ids)) for g, gi in info.items()}
        lag: dict[str, int] = {}
        # An evicted member takes its subscription with it, so the pipeline topics are always looked at.
        topics = set(pipeline_topics(self._settings)) | {t for gi in info.values() for t in gi.topics}
        for row in broker.lags(sorted(topics), sorted(wanted), info):
            lag[row.group] = lag.get(row.group, 0) + row.lag
        restarted = []
        for child, pid in pids.items():
            group = self._groups.get(child.split("-")[0])
            if group is None:
                continue
            if pid in members.get(group, set()) or lag.get(group, 0) == 0 or uptimes.get(child, 0) < self._stall:
                self._absent_since.pop(pid, None)
                continue
            since = self._absent_since.setdefault(pid, now)
            if now - since >= self._stall:
                log.error("worker_stalled", role=child, pid=pid, group=group, lag=lag[group],
                          absent_s=round(now - since, 1))
                metrics.OPS_STALLS.labels(child.split("-")[0]).inc()
                self._sup.restart(child, "stalled")
                self._absent_since.pop(pid, None)
                restarted.append(child)
        return restarted

    def _run(self) -> None:
        broker: Broker | None = None
        while not self._stop.wait(self._interval):
            try:
                broker = broker or Broker(self._settings)
                self.check_once(broker)
            except (KafkaError, OSError, ValueError) as exc:
                log.warning("watchdog_check_failed", error=f"{type(exc).__name__}: {exc}")
                if broker is not None:
                    broker.close()
                broker = None
        if broker is not None:
            broker.close()
