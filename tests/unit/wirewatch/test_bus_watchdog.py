"""The consumer loop's poll watchdog: a poll stuck past the limit is reported, and a worker process exits.

The stuck client is a stand-in (the real hang needs a loaded machine to reproduce); what is tested is the
loop's reaction to a ``poll()`` that never returns.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from wirewatch import bus, metrics
from wirewatch.settings import load_settings

_STUCK_WORKER = textwrap.dedent(
    """
    import time
    from wirewatch import bus
    from wirewatch.settings import load_settings

    class Stuck:
        def poll(self, timeout_ms, max_records=None):
            time.sleep(3600)
        def close(self, autocommit=False):
            pass

    loop = bus.ConsumerLoop(load_settings(None), topics=["t"], group="g", decode=bytes, handle=lambda b: None,
                            producer=None, config=bus.LoopConfig(poll_stall_s=1.0))
    loop._make_consumer = lambda: Stuck()
    loop.run()
    """
)


def test_worker_process_stuck_in_poll_exits_to_be_restarted() -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _STUCK_WORKER], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 75, proc.stderr[-2000:]
    assert "consumer_poll_stalled" in proc.stdout + proc.stderr
    assert time.monotonic() - started < 30


def test_loop_in_a_thread_reports_a_stuck_poll_without_exiting() -> None:
    loop: bus.ConsumerLoop[bytes] = bus.ConsumerLoop(
        load_settings(None), topics=["t"], group="g-thread", decode=bytes, handle=lambda b: None,
        producer=None, config=bus.LoopConfig(poll_stall_s=0.4))  # type: ignore[arg-type]
    before = metrics.BUS_POLL_STALLS.labels("g-thread")._value.get()
    loop._poll_since = time.monotonic() - 10
    t = threading.Thread(target=loop._watch_polls, args=(False,), daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and metrics.BUS_POLL_STALLS.labels("g-thread")._value.get() == before:
        time.sleep(0.05)
    loop.stop()
    t.join(5)
    assert metrics.BUS_POLL_STALLS.labels("g-thread")._value.get() == before + 1
