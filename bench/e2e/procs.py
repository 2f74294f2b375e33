"""The end-to-end benchmark's processes and readers: the real ``wirewatch`` roles, started, revived and stopped
as ``wirewatch run``'s supervisor would; their CPU and peak RSS from /proc; and a group-less reader of a topic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from wirewatch.ops.roles import WIREWATCH
from wirewatch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS in MiB of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        hwm = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if x.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, IndexError):
        return float("nan"), float("nan")
    return cpu, hwm


def runqueue_wait_s(pid: int) -> float:
    """Seconds the live threads of ``pid`` have spent runnable but waiting for a core (/proc/PID/task/*/schedstat);
    a thread that has exited takes its share with it."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return float("nan")
    return total / 1e9


def busy_cores_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process), from /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return float("nan")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def stack_pids(settings: Settings) -> dict[str, int]:
    """The pids of the local Kafka and redis-server that ``wirewatch.stack.up`` started (those that live)."""
    from wirewatch.stack.common import pid_alive
    from wirewatch.stack.kafka_server import kafka_paths
    from wirewatch.stack.redis_server import redis_paths

    pids = {"kafka": pid_alive(kafka_paths(settings)[2]), "redis": pid_alive(redis_paths(settings)[2])}
    return {k: v for k, v in pids.items() if v is not None}


class Meter:
    """The CPU that is not a worker's, over one phase: this process (the harness: farm, webhook receiver,
    Kafka readers), the given processes (Kafka, redis-server), and the whole machine's busy cores, which
    includes whatever else runs on it."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.time()
        self.own0 = time.process_time()
        self.cpu0 = {n: proc_usage(p)[0] for n, p in pids.items()}
        self.busy0 = busy_cores_s()

    def read(self) -> dict[str, Any]:
        """``{"harness": {cpu_s, cpu_share}, <name>: {...}, "machine_busy_cores": ..., "seconds": ...}``."""
        wall = max(time.time() - self.t0, 1e-9)
        cpu = {"harness": time.process_time() - self.own0}
        cpu |= {n: proc_usage(p)[0] - self.cpu0[n] for n, p in self.pids.items()}
        out: dict[str, Any] = {n: {"cpu_s": c, "cpu_share": c / wall} for n, c in cpu.items()}
        return out | {"machine_busy_cores": (busy_cores_s() - self.busy0) / wall, "seconds": wall}


def assigned(log: Path) -> bool:
    """Whether the worker logging to ``log`` has been given a non-empty set of partitions."""
    lines = log.read_bytes().splitlines() if log.exists() else []
    return any(b'"partitions_assigned"' in line and b'"partitions": []' not in line for line in lines)


class Reader:
    """Everything on one Kafka topic so far, read incrementally from the beginning (no group)."""

    def __init__(self, settings: Settings, topic: str, partitions: int) -> None:
        self.c = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                               auto_offset_reset="earliest", group_id=None)
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.c.assign(parts)
        self.c.seek_to_beginning(*parts)
        self.records: list[Any] = []

    def poll(self) -> list[Any]:
        got = [r for recs in self.c.poll(timeout_ms=200, max_records=50000).values() for r in recs]
        self.records += got
        return got

    def drain(self, quiet_s: float = 1.0) -> list[Any]:
        """Poll until nothing new arrived for ``quiet_s``; returns all records read so far."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            if self.poll():
                last = time.monotonic()
        return self.records

    def close(self) -> None:
        self.c.close()


class Roles:
    """``wirewatch <role>`` processes on one config file, each in its own session, logging JSON lines to
    ``<logs>/<name>.log``. A name is the role, with ``-<i>`` for the i-th of several (``classify-0``)."""

    def __init__(self, cfg: Path, logs: Path, tag: str, max_restarts: int = 5) -> None:
        self.cfg, self.logs, self.tag, self.max_restarts = cfg, logs, tag, max_restarts
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: Counter[str] = Counter()
        self._pids_at_cpu: dict[str, int] = {}
        self._waits_at_cpu: dict[str, float] = {}

    def start(self, name: str) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([*WIREWATCH, "--config", str(self.cfg), "--log-format", "json",
                                             "--log-level", "info", name.split("-")[0]],
                                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)

    def revive(self) -> None:
        """Start again any process that exited (its liveness check gave up on a group that lost it, say).

        Raises:
            SystemExit: when one has exited more than ``max_restarts`` times.
        """
        for name, p in list(self.procs.items()):
            if p.poll() is not None:
                self.restarts[name] += 1
                say(f"[{self.tag}] {name} exited ({p.returncode}); restarting. Its log ends:\n{self.tail(name, 600)}")
                if self.restarts[name] > self.max_restarts:
                    raise SystemExit(f"[{self.tag}] {name} keeps exiting; logs in {self.logs}")
                self.start(name)

    def wait_assigned(self, names: list[str], timeout_s: float) -> None:
        """Return once every process in ``names`` holds partitions (reviving any that exit meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while not all(assigned(self.logs / f"{n}.log") for n in names):
            self.revive()
            if time.monotonic() > deadline:
                raise SystemExit(f"[{self.tag}] workers not ready (timeout); logs in {self.logs}")
            time.sleep(0.3)

    def cpu(self) -> dict[str, float]:
        """CPU seconds each process has used so far (the base for :meth:`usage`)."""
        self._pids_at_cpu = {n: p.pid for n, p in self.procs.items()}
        self._waits_at_cpu = {n: runqueue_wait_s(p.pid) for n, p in self.procs.items()}
        return {n: proc_usage(p.pid)[0] for n, p in self.procs.items()}

    def usage(self, cpu0: dict[str, float], wall_s: float) -> dict[str, dict[str, float]]:
        """Per process: CPU seconds since ``cpu0``, that as a share of ``wall_s`` (cores), peak RSS in MiB, and
        the seconds its threads waited for a core meanwhile (``runqueue_wait_s``: summed over threads, so it can
        exceed the wall time).

        A process restarted since counts from its restart: what the one before it used is gone with it.
        """
        out = {}
        for n, p in self.procs.items():
            cpu, hwm = proc_usage(p.pid)
            same = self._pids_at_cpu.get(n) == p.pid
            base = cpu0[n] if same else 0.0
            wait = runqueue_wait_s(p.pid) - (self._waits_at_cpu.get(n, 0.0) if same else 0.0)
            out[n] = {"cpu_s": cpu - base, "cpu_share": (cpu - base) / wall_s, "rss_peak_mib": hwm,
                      "runqueue_wait_s": wait}
        return out

    def tail(self, name: str, chars: int) -> str:
        return (self.logs / f"{name}.log").read_bytes()[-chars:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL what has not exited within 30 s."""
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
