"""Run each pipeline role as its own child process and keep it running.

The contract of :class:`Supervisor`:

- each :class:`Child` is started once at :meth:`Supervisor.run`, in its own process group;
- a child that exits while the supervisor is not stopping is restarted after a delay that doubles with each
  consecutive crash (``restart_initial_s`` up to ``restart_max_s``); a child that stayed up for
  ``stable_after_s`` starts over from the initial delay. Every exit is logged with the role, the exit code
  (or signal), the restart count and the delay before the next start;
- :meth:`Supervisor.stop` (SIGTERM or SIGINT once signal handlers are installed) sends SIGTERM to every
  child so that it finishes its batch, commits and closes; whatever is still running after
  ``drain_timeout_s`` gets SIGKILL. A second SIGINT skips the wait. ``run`` returns only when every child
  has exited;
- children die with the supervisor (``PR_SET_PDEATHSIG`` on Linux), so a killed supervisor leaves no orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from wirewatch import metrics
from wirewatch.log import describe_error, get_logger

log = get_logger("supervisor")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial_s * 2 ** (crashes - 1)`` up to ``max_s``; reset once up ``stable_after_s``."""

    initial_s: float = 1.0
    max_s: float = 60.0
    stable_after_s: float = 60.0

    def delay(self, consecutive_crashes: int) -> float:
        """The wait before the next start after ``consecutive_crashes`` (>= 1) exits in a row."""
        return float(min(self.max_s, self.initial_s * 2 ** max(0, consecutive_crashes - 1)))


@dataclass(frozen=True)
class Child:
    """One supervised role: the command that runs it and extra environment."""

    role: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Slot:
    child: Child
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    consecutive: int = 0
    next_start: float = 0.0
    last_exit: int | None = None
    out: IO[bytes] | None = None
    kill_at: float = 0.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_kind(code: int) -> str:
    """``clean`` (0), ``signal`` (killed by a signal) or ``crash`` (any other exit status)."""
    if code == 0:
        return "clean"
    return "signal" if code < 0 else "crash"


def describe_exit(code: int) -> str:
    """Human words for an exit status: ``exit 3``, ``signal SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit {code}"


class Supervisor:
    """Starts, restarts and drains child processes. See the module docstring for the contract."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        backoff: Backoff | None = None,
        drain_timeout_s: float = 30.0,
        log_dir: Path | None = None,
        on_exit: Callable[[str, int, int, float], None] | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self.backoff = backoff or Backoff()
        self.drain_timeout_s = drain_timeout_s
        self.log_dir = log_dir
        self._slots = [_Slot(c) for c in children]
        self._on_exit = on_exit
        self._tick = tick_s
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Begin a graceful drain; a second call skips the wait and kills what is left."""
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT drain; a repeated SIGINT (Ctrl-C twice) kills at once. Main thread only."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def pids(self) -> dict[str, int]:
        """Role to pid of the children running now."""
        with self._lock:
            return {s.child.role: s.proc.pid for s in self._slots if s.proc is not None and _running(s.proc)}

    def uptimes(self) -> dict[str, float]:
        """Role to seconds its current process has been running."""
        now = time.monotonic()
        with self._lock:
            return {s.child.role: now - s.started_at for s in self._slots if _running(s.proc)}

    def restart(self, role: str, reason: str) -> bool:
        """Stop ``role``'s process gracefully (SIGKILL after the drain timeout); the loop restarts it.

        Returns False when it is not running.
        """
        with self._lock:
            slot = next((s for s in self._slots if s.child.role == role and _running(s.proc)), None)
            if slot is None:
                return False
            # Asking again does not push the SIGKILL deadline back.
            slot.kill_at = slot.kill_at or time.monotonic() + self.drain_timeout_s
        log.warning("worker_restarting", role=role, pid=slot.proc.pid if slot.proc else None, reason=reason)
        _signal_group(slot.proc, signal.SIGTERM)
        return True

    def restarts(self) -> dict[str, int]:
        """Role to how many times it was restarted."""
        return {s.child.role: s.restarts for s in self._slots}

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until :meth:`stop`.

        Returns 0 when every child stopped by itself during the drain, 1 when one had to be killed.
        """
        for slot in self._slots:
            self._start(slot)
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            for slot in self._slots:
                self._check(slot, now)
        return self._drain()

    def _start(self, slot: _Slot) -> None:
        env = os.environ | dict(slot.child.env)
        stdout: IO[bytes] | int | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if slot.out is None:
                slot.out = (self.log_dir / f"{slot.child.role}.log").open("ab", buffering=0)
            stdout = slot.out
        try:
            proc = subprocess.Popen(
                list(slot.child.argv), env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                stderr=subprocess.STDOUT if stdout is not None else None,
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            slot.consecutive += 1
            delay = self.backoff.delay(slot.consecutive)
            slot.next_start = time.monotonic() + delay
            log.error("worker_start_failed", role=slot.child.role, error=describe_error(exc),
                      restart_in_s=delay)
            return
        with self._lock:
            slot.proc, slot.started_at = proc, time.monotonic()
        metrics.OPS_CHILD_UP.labels(slot.child.role).set(1)
        log.info("worker_started", role=slot.child.role, pid=proc.pid, restarts=slot.restarts)

    def _check(self, slot: _Slot, now: float) -> None:
        proc = slot.proc
        if proc is None:
            if slot.next_start and now >= slot.next_start and not self._stop.is_set():
                slot.restarts += 1
                metrics.OPS_CHILD_RESTARTS.labels(slot.child.role).inc()
                self._start(slot)
            return
        code = proc.poll()
        if code is None:
            if slot.kill_at and now >= slot.kill_at:
                log.warning("worker_killed", role=slot.child.role, pid=proc.pid, after_s=self.drain_timeout_s)
                _signal_group(proc, signal.SIGKILL)
                slot.kill_at = 0.0
            return
        slot.kill_at = 0.0
        uptime = now - slot.started_at
        if uptime >= self.backoff.stable_after_s:
            slot.consecutive = 0
        slot.consecutive += 1
        delay = self.backoff.delay(slot.consecutive)
        with self._lock:
            slot.proc, slot.last_exit, slot.next_start = None, code, now + delay
        kind = exit_kind(code)
        metrics.OPS_CHILD_UP.labels(slot.child.role).set(0)
        metrics.OPS_CHILD_EXITS.labels(slot.child.role, kind).inc()
        log.error("worker_exited", role=slot.child.role, pid=proc.pid, exit_code=code,
                  exit=describe_exit(code), kind=kind, uptime_s=round(uptime, 2), restarts=slot.restarts,
                  crashes_in_a_row=slot.consecutive, restart_in_s=delay)
        if self._on_exit is not None:
            self._on_exit(slot.child.role, code, slot.restarts, delay)

    def _drain(self) -> int:
        started = time.monotonic()
        running = [s for s in self._slots if s.proc is not None and s.proc.poll() is None]
        log.info("supervisor_draining", roles=[s.child.role for s in running], timeout_s=self.drain_timeout_s)
        for slot in running:
            _signal_group(slot.proc, signal.SIGTERM)
        deadline = started + self.drain_timeout_s
        while time.monotonic() < deadline and not self._hurry.is_set():
            if all(s.proc.poll() is not None for s in running if s.proc is not None):
                break
            time.sleep(0.05)
        killed = 0
        for slot in running:
            assert slot.proc is not None
            if slot.proc.poll() is None:
                killed += 1
                log.warning("worker_killed", role=slot.child.role, pid=slot.proc.pid,
                            after_s=round(time.monotonic() - started, 2))
                _signal_group(slot.proc, signal.SIGKILL)
            code = slot.proc.wait()
            metrics.OPS_CHILD_UP.labels(slot.child.role).set(0)
            log.info("worker_stopped", role=slot.child.role, exit_code=code, exit=describe_exit(code),
                     drain_s=round(time.monotonic() - started, 2))
        for slot in self._slots:
            if slot.out is not None:
                slot.out.close()
                slot.out = None
        log.info("supervisor_stopped", drain_s=round(time.monotonic() - started, 2), killed=killed)
        return 1 if killed else 0


def _running(proc: subprocess.Popen[Any] | None) -> bool:
    return proc is not None and proc.poll() is None


def _signal_group(proc: subprocess.Popen[Any] | None, sig: signal.Signals) -> None:
    if proc is None:
        return
    # Each child leads its own process group, so grandchildren (a worker's helpers) get the signal too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
