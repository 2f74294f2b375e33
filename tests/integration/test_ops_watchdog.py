"""The group watchdog on the real broker: a supervised consumer that its group lost (frozen with SIGSTOP
until the coordinator evicts it) while messages wait is restarted, and the new process consumes them."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from wirewatch import bus, metrics
from wirewatch.ops.supervisor import Backoff, Child, Supervisor
from wirewatch.ops.watchdog import GroupWatchdog, member_pids
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHILD = Path(__file__).with_name("consumer_child.py")


def test_member_pids_reads_this_hosts_pids_from_client_ids() -> None:
    host = socket.gethostname()
    ids = [f"wirewatch-wirewatch-classify-{host}-123", f"wirewatch-wirewatch-classify-other-{host}x-456",
           "wirewatch-wirewatch-alerts-elsewhere-789", "garbage"]
    assert member_pids(ids, host) == {123}


def test_role_groups_are_named_after_the_group_prefix_and_the_alerts_worker_joins_its_own(
        make_settings: Callable[..., Settings]) -> None:
    from alerts.worker import AlertsWorker
    from wirewatch.bus import role_groups

    assert role_groups(Settings()) == {"classify": "wirewatch-classify", "alerts": "wirewatch-alerts"}
    s = make_settings(kafka={"group_prefix": "newsroom-b"}, alerts={"metrics_port": None})
    assert role_groups(s) == {"classify": "newsroom-b-classify", "alerts": "newsroom-b-alerts"}
    worker = AlertsWorker(s)
    try:
        assert worker.loop.group == "newsroom-b-alerts"
    finally:
        worker.producer.close()


def _values(out: Path) -> list[str]:
    if not out.exists():
        return []
    return [line.split(":", 2)[2] for line in out.read_text().splitlines() if line.count(":") >= 2]


def test_a_worker_its_group_lost_is_restarted_and_the_waiting_messages_are_consumed(
    settings: Settings, tmp_path: Path
) -> None:
    topic, group, out = settings.kafka.topics.articles, "test-watchdog", tmp_path / "handled.txt"
    overrides = {"stack": settings.stack.model_dump(mode="json"), "redis": {"key_prefix": settings.redis.key_prefix}}
    child = Child("worker", (sys.executable, str(CHILD), json.dumps(overrides), topic, group, str(out), "commit"))
    sup = Supervisor([child], backoff=Backoff(0.2, 1.0, 30.0), drain_timeout_s=2.0, tick_s=0.05)
    watchdog = GroupWatchdog(settings, sup, role_groups={"worker": group}, interval_s=1.0, stall_s=3.0)
    producer = bus.Producer(settings, client_id="test")
    stalls_before = metrics.OPS_STALLS.labels("worker")._value.get()
    runner = threading.Thread(target=sup.run)
    with structlog.testing.capture_logs() as logs:
        runner.start()
        try:
            producer.send_many([bus.Outgoing(topic, f"k{i}", f"first-{i}".encode()) for i in range(5)])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(_values(out)) < 5:
                time.sleep(0.2)
            assert sorted(_values(out)) == [f"first-{i}" for i in range(5)]
            first_pid = sup.pids()["worker"]
            os.kill(first_pid, signal.SIGSTOP)  # alive, but silent: the coordinator evicts it after 10 s
            producer.send_many([bus.Outgoing(topic, f"k{i}", f"second-{i}".encode()) for i in range(5)])
            watchdog.start()
            deadline = time.monotonic() + 150  # eviction (10 s session) + 3 s stall + restart + rejoin, busy box
            while time.monotonic() < deadline and len(_values(out)) < 10:
                time.sleep(0.5)
        finally:
            watchdog.stop()
            sup.stop()
            runner.join(30)
            producer.close()
    seen = [(e["event"], e.get("role"), e.get("reason")) for e in logs
            if str(e["event"]).startswith(("worker_", "watchdog", "supervisor"))]
    why = {"events": seen, "watchdog_checks": watchdog.checks, "last_view": watchdog.last_view}
    assert sorted(v for v in _values(out) if v.startswith("second")) == [f"second-{i}" for i in range(5)], why
    stalled = [e for e in logs if e["event"] == "worker_stalled"]
    assert len(stalled) == 1 and stalled[0]["role"] == "worker" and stalled[0]["pid"] == first_pid
    assert stalled[0]["group"] == group and stalled[0]["lag"] >= 5
    assert sup.restarts()["worker"] == 1
    assert metrics.OPS_STALLS.labels("worker")._value.get() == stalls_before + 1
