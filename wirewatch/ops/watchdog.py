"""Restart a supervised worker that is not a member of its consumer group while work is waiting.

A worker process can be alive and still do nothing: its consumer was evicted from the group (missed
heartbeats on a starved machine, a client whose heartbeat stopped, one stuck in a rebalance) and never
rejoined. Nothing crashes, so restarts never happen, and the partitions it held wait. The watchdog compares
the supervisor's children with the members the group coordinator reports (each consumer's client id ends
in its host name and pid): a child of a consumer role that has been absent from its group for ``stall_s``
while the group has lag is restarted (SIGTERM, then SIGKILL after the drain timeout), logged as
``worker_stalled`` and counted in ``wirewatch_ops_stalls_total``.

Lag is counted on the topics each role reads, whether or not its group ever committed: a group that never
committed and has no member left is not even listed by the broker, and its backlog is still waiting.

The bound: a child is restarted at most ``stall_s + interval_s`` after it was last seen in its group (with
the defaults, ``ops.stall_after_s`` 30 s and ``ops.watchdog_interval_s`` 5 s: 35 s); one never seen in its
group at most ``2 * stall_s + interval_s`` after it started (the first ``stall_s`` are its time to load and
join). Its replacement starts within ``ops.drain_timeout_s`` and the restart delay after that. The
worker's own liveness checks (:mod:`wirewatch.liveness`) usually end it sooner; this is the check from
outside, for what those cannot see.

While the broker cannot be reached no worker can be a member, so a broker outage is not a worker's absence:
after the watchdog could not reach the broker, every worker's clock starts again at the first check that
reaches it, and a worker gets ``stall_s`` from then to rejoin.

No failed check ends the watchdog: each is logged as ``watchdog_check_failed`` (warning for Kafka and
socket errors, error for anything else) and the next one runs on a fresh connection. ``checks`` and
``last_view`` say how many checks completed and what the last one saw per group.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping, Sequence

from kafka.errors import KafkaError

from wirewatch import metrics
from wirewatch.bus import role_groups as default_role_groups
from wirewatch.log import describe_error, get_logger
from wirewatch.ops.lag import Broker, pipeline_topics
from wirewatch.ops.supervisor import Supervisor
from wirewatch.settings import Settings

log = get_logger("ops.watchdog")



def role_topics(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The topics each consumer role reads."""
    t = settings.kafka.topics
    return {"classify": (t.articles,), "alerts": (t.matches,)}


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
                 role_reads: Mapping[str, Sequence[str]] | None = None, interval_s: float = 5.0,
                 stall_s: float = 30.0) -> None:
        self._settings = settings
        self._sup = supervisor
        self._groups = dict(role_groups or default_role_groups(settings))
        self._reads = {role: tuple(ts) for role, ts in (role_reads or role_topics(settings)).items()}
        self._interval = interval_s
        self._stall = stall_s
        self._last_seen: dict[int, float] = {}
        self._restarted: set[int] = set()
        self._unreachable = False
        self._absence_floor = float("-inf")
        #: Checks completed, and what the last one saw per group (members' pids on this host, lag, state).
        self.checks = 0
        self.last_view: dict[str, dict[str, object]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-watchdog", daemon=True)

    def start(self) -> GroupWatchdog:
        """Begin watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (returns at once)."""
        self._stop.set()

    def broker_unreachable(self) -> None:
        """Note that a check could not reach the broker: absences are counted again from the next check that does."""
        self._unreachable = True

    def check_once(self, broker: Broker, now: float | None = None) -> list[str]:
        """Look once; returns the roles restarted."""
        now = time.monotonic() if now is None else now
        pids = self._sup.pids()
        uptimes = self._sup.uptimes()
        wanted = {g for role, g in self._groups.items() if any(r.split("-")[0] == role for r in pids)}
        if not wanted:
            return []
        info = broker.describe(sorted(wanted))
        if self._unreachable:
            self._unreachable, self._absence_floor = False, now
        members = {g: member_pids(list(gi.client_ids)) for g, gi in info.items()}
        lag: dict[str, int] = {}
        # An evicted member takes its subscription with it, and a group that never committed has no offsets
        # to name its topics: what each role reads is always counted.
        reads: dict[str, set[str]] = {}
        for role, role_group in self._groups.items():
            if role_group in wanted:
                reads.setdefault(role_group, set()).update(self._reads.get(role, ()))
        topics = (set(pipeline_topics(self._settings)) | {t for gi in info.values() for t in gi.topics}
                  | {t for ts in reads.values() for t in ts})
        subscribed = {g: sorted(ts) for g, ts in reads.items()}
        for row in broker.lags(sorted(topics), sorted(wanted), info, subscribed):
            lag[row.group] = lag.get(row.group, 0) + row.lag
        self.checks += 1
        self.last_view = {g: {"members": sorted(members.get(g, set())), "lag": lag.get(g, 0),
                              "state": info[g].state if g in info else "unknown"} for g in sorted(wanted)}
        restarted = []
        self._last_seen = {pid: t for pid, t in self._last_seen.items() if pid in pids.values()}
        self._restarted &= set(pids.values())
        for child, pid in pids.items():
            group = self._groups.get(child.split("-")[0])
            if group is None or pid in self._restarted:
                continue  # a restart asked for once runs its course (SIGTERM, SIGKILL after the drain timeout)
            if pid in members.get(group, set()):
                self._last_seen[pid] = now
                continue
            if lag.get(group, 0) == 0:
                continue  # nothing waits for it (yet): the clock keeps running from when it was last seen
            # A child never seen in its group gets ``stall_s`` of grace after its start (loading a model
            # comes before joining), then ``stall_s`` more like everyone else.
            since = max(self._last_seen.get(pid, now - uptimes.get(child, 0.0) + self._stall), self._absence_floor)
            if now - since >= self._stall:
                log.error("worker_stalled", role=child, pid=pid, group=group, lag=lag[group],
                          absent_s=round(now - since, 1), seen_in_group=pid in self._last_seen)
                metrics.OPS_STALLS.labels(child.split("-")[0]).inc()
                self._sup.restart(child, "stalled")
                self._restarted.add(pid)
                restarted.append(child)
        return restarted

    def _run(self) -> None:
        broker: Broker | None = None
        while not self._stop.wait(self._interval):
            try:
                broker = broker or Broker(self._settings)
                self.check_once(broker)
            except Exception as exc:
                # Kafka and socket errors are expected during an outage; anything else is a bug worth an
                # error line, but it must not end the thread: a dead watchdog restarts nothing, silently.
                # Only a broker that cannot be reached restarts the absence clocks: a bug that fails every
                # other check would otherwise hold them back for ever, and a stalled worker would never be
                # restarted.
                expected = isinstance(exc, (KafkaError, OSError, ValueError))
                (log.warning if expected else log.error)("watchdog_check_failed", error=describe_error(exc))
                if expected:
                    self.broker_unreachable()
                if broker is not None:
                    broker.close()
                broker = None
        if broker is not None:
            broker.close()
