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
        return {n: proc_usage(p.pid)[0] for n, p in self.procs.items()}

    def usage(self, cpu0: dict[str, float], wall_s: float) -> dict[str, dict[str, float]]:
        """Per process: CPU seconds since ``cpu0``, that as a share of ``wall_s`` (cores), and peak RSS in MiB."""
        out = {}
        for n, p in self.procs.items():
            cpu, hwm = proc_usage(p.pid)
            out[n] = {"cpu_s": cpu - cpu0[n], "cpu_share": (cpu - cpu0[n]) / wall_s, "rss_peak_mib": hwm}
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
