"""The supervisor with real child processes: restart with backoff after a crash, bounded graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from wirewatch.ops.supervisor import Backoff, Child, Supervisor

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent
CHILD = HERE / "ops_child.py"
MAIN = HERE / "ops_supervisor_main.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _wait_for(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_crashed_child_is_restarted_with_doubling_backoff_and_each_crash_is_logged(tmp_path: Path) -> None:
    exits: list[tuple[str, int, int, float]] = []
    sup = Supervisor([Child("crasher", (sys.executable, str(CHILD), "crash", str(tmp_path)))],
                     backoff=Backoff(initial_s=0.2, max_s=0.8, stable_after_s=30), drain_timeout_s=2,
                     on_exit=lambda *a: exits.append(a), tick_s=0.02)
    with structlog.testing.capture_logs() as logs:
        t = threading.Thread(target=sup.run)
        t.start()
        assert _wait_for(lambda: len(exits) >= 5, 20), exits
        sup.stop()
        t.join(10)
    assert not t.is_alive()
    assert [e[1] for e in exits[:5]] == [3] * 5
    assert [e[3] for e in exits[:5]] == [0.2, 0.4, 0.8, 0.8, 0.8]  # doubles, then capped
    assert [e[2] for e in exits[:5]] == [0, 1, 2, 3, 4]  # restart count seen at each exit
    starts = [float(line.split()[2]) for line in (tmp_path / "starts").read_text().splitlines()]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)][:4]
    # Each gap is the child's ~50 ms run plus the backoff delay; it must honour the delay.
    for gap, delay in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=False):
        assert gap >= delay, (gaps, delay)
    crash_logs = [e for e in logs if e["event"] == "worker_exited"]
    assert len(crash_logs) >= 5
    first = crash_logs[0]
    assert (first["role"], first["exit_code"], first["kind"], first["restarts"]) == ("crasher", 3, "crash", 0)
    assert first["log_level"] == "error" and first["restart_in_s"] == 0.2
    assert sup.restarts()["crasher"] >= 4


def test_backoff_resets_after_a_child_stayed_up() -> None:
    b = Backoff(initial_s=1, max_s=60, stable_after_s=10)
    assert [b.delay(n) for n in (1, 2, 3, 4, 7, 8)] == [1, 2, 4, 8, 60, 60]


def _terminate_supervisor(tmp_path: Path, drain_s: str, *children: str) -> tuple[list[int], int, float, str]:
    """Start the supervisor, SIGTERM it once every child is ready: (child pids, exit code, seconds, output)."""
    proc = subprocess.Popen([sys.executable, str(MAIN), drain_s, str(tmp_path), *children],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == len(children), 20)
        pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("ready-*")]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    return pids, code, took, proc.stdout.read().decode() if proc.stdout else ""


def test_sigterm_drains_children_gracefully_within_the_bound(tmp_path: Path) -> None:
    pids, code, took, out = _terminate_supervisor(tmp_path, "10", "drain", "drain")
    assert code == 0, out
    assert took < 3.0, took  # children need ~0.3 s to drain; the bound is 10 s
    assert sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("drained-*")) == sorted(pids)
    assert not any(_alive(pid) for pid in pids)
    assert '"event": "supervisor_stopped"' in out and '"killed": 0' in out


def test_child_ignoring_sigterm_is_killed_after_the_drain_timeout(tmp_path: Path) -> None:
    pids, code, took, out = _terminate_supervisor(tmp_path, "1.0", "stubborn", "drain")
    assert code == 1, out  # something had to be killed
    assert 1.0 <= took < 4.0, took
    assert '"event": "worker_killed"' in out and '"role": "stubborn-0"' in out
    assert len(list(tmp_path.glob("drained-*"))) == 1  # the well-behaved one still drained
    assert not any(_alive(pid) for pid in pids)


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(MAIN), "5", str(tmp_path), "drain"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 1, 20)
        pid = int(next(tmp_path.glob("ready-*")).name.split("-")[1])
        proc.kill()
        proc.wait(timeout=10)
        assert _wait_for(lambda: not _alive(pid), 5), "orphaned child still running"
    finally:
        if proc.poll() is None:
            proc.kill()
