"""A stop signal while a worker is still starting ends it with status 0, not as a crash (-15)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

CHILD = """
import sys, time
from wirewatch.startup import exit_cleanly_until_running
exit_cleanly_until_running()
print("ready", flush=True)
time.sleep(30)
print("not stopped", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_start_up_exits_with_status_0(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "not stopped" not in out and "Traceback" not in err


def test_without_it_the_same_child_dies_of_the_signal() -> None:
    child = CHILD.replace("exit_cleanly_until_running()\n", "")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM
