"""What both local services share: errors, status, folders, ports, pid files and waiting for an answer."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wirewatch.log import get_logger
from wirewatch.settings import Settings

log = get_logger("stack")


class StackError(RuntimeError):
    """The local stack could not be prepared or started; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    """One service's state.

    ``running`` (answers), ``stopped`` (not started), ``unreachable`` (started or configured, but not
    answering), or ``external`` (configured elsewhere and answering).
    """

    name: str
    state: str
    endpoint: str
    version: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the service answers."""
        return self.state in ("running", "external")


def cache_dir(settings: Settings) -> Path:
    """Where Kafka's jars of the configured version are cached (``stack.cache_dir``, else the XDG cache)."""
    base = settings.stack.cache_dir or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "wirewatch"
    return Path(base).expanduser() / f"kafka-{settings.stack.kafka_version}"


def stack_dir(settings: Settings, name: str) -> Path:
    """``<data_dir>/stack/<name>``, created if missing."""
    path = settings.data_dir.expanduser() / "stack" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    """An ephemeral port that was free a moment ago (for tests and the demo)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` when that process lives (a zombie child counts as dead), else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie child (we started it in this process and it died) counts as dead.
    with contextlib.suppress(FileNotFoundError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return None
    return pid


def wait_until(check: Callable[[], ServiceStatus], what: str, timeout_s: float, log_hint: Path | None) -> None:
    """Poll ``check`` until it is ok; raises :class:`StackError` after ``timeout_s``, with ``log_hint``'s tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = check()
        if st.ok:
            return
        time.sleep(0.25)
    tail = ""
    if log_hint and log_hint.exists():
        tail = "\n" + "\n".join(log_hint.read_text(errors="replace").splitlines()[-15:])
    raise StackError(f"{what} did not answer within {timeout_s:.0f}s{tail}")


def stop_pid(pid_file: Path, name: str, timeout_s: float = 30.0) -> bool:
    """SIGTERM the process group in ``pid_file``, SIGKILL after ``timeout_s``; False when nothing ran."""
    pid = pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid_file):
        time.sleep(0.2)
    if pid_alive(pid_file):
        log.warning("stack_kill", service=name, pid=pid, after_s=timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    return True
