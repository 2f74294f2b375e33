"""Liveness is a checked property, on the real broker: a worker that is not a member of its consumer group
while its topics have lag is restarted within a bound, and the messages that waited are consumed.

Two checks make it so, each tested here on its own and then together as in the demo run where no alert
arrived (the alerts worker evicted, never having committed, spinning in ``poll()``):

- the worker's own (:mod:`wirewatch.liveness`): a consumer whose heartbeats stopped exits with 75, and one
  whose heartbeat task ended on an error is asked to rejoin and stays;
- the supervisor's (:mod:`wirewatch.ops.watchdog`): a child absent from its group is restarted, also when the
  group never committed (the broker then does not even list it, and its lag used to count as 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.integration.ops_support import wait_until
from wirewatch import bus, metrics
from wirewatch.ops.lag import Broker
from wirewatch.ops.supervisor import Backoff, Child, Supervisor
from wirewatch.ops.watchdog import GroupWatchdog
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HERE = Path(__file__).parent
DEAF_CHILD = HERE / "liveness_child.py"
IDLE_CHILD = HERE / "ops_child.py"


def _overrides(settings: Settings, **kafka: Any) -> str:
    return json.dumps({"data_dir": str(settings.data_dir), "stack": settings.stack.model_dump(mode="json"),
                       "kafka": settings.kafka.model_dump(mode="json") | kafka,
                       "redis": settings.redis.model_dump(mode="json")})




def _members(settings: Settings, group: str) -> int | None:
    with Broker(settings) as broker:
        info = broker.describe([group]).get(group)
    return None if info is None else info.members


def test_a_worker_whose_heartbeats_stopped_exits_to_be_restarted_within_the_bound(
    settings: Settings, tmp_path: Path
) -> None:
    """Session 6 s, member_stall_s 5 s: out of the group at most 6 s after its heartbeat stopped, exit
    at most 5 s + one check (1.25 s) later. Before the liveness checks it polled on for good."""
    topic, group = settings.kafka.topics.matches, f"g-deaf-{uuid.uuid4().hex[:6]}"
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, f"k{i}", f"m{i}".encode()) for i in range(5)])
    producer.close()
    proc = subprocess.Popen([sys.executable, str(DEAF_CHILD), _overrides(settings, member_stall_s=5.0), topic,
                             group, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: (tmp_path / "deaf-since").exists(), 60), "the child never got a batch"
        deaf_at = time.monotonic()
        assert wait_until(lambda: _members(settings, group) == 0, 20), "the broker kept the deaf member"
        evicted_after = time.monotonic() - deaf_at
        code = proc.wait(40)
        exited_after = time.monotonic() - deaf_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    print(f"heartbeat stopped -> evicted {evicted_after:.1f} s -> exited {exited_after:.1f} s (code {code})")
    assert code == 75, out[-3000:]
    assert "consumer_stalled" in out and "not_member" in out, out[-3000:]
    assert exited_after <= 6 + 5 + 1.25 + 3, f"exited {exited_after:.1f} s after its heartbeat stopped"


def test_a_child_that_never_joins_a_group_that_never_committed_is_restarted(settings: Settings,
                                                                               tmp_path: Path) -> None:
    """The supervisor's check alone: the child never becomes a member (it does not even consume) while the
    topic it should read holds 5 messages and its group has no committed offset. Bound with stall_s 3 s and
    a 1 s interval: 2 x 3 + 1 s after the child started (plus a second of check latency)."""
    topic, group = settings.kafka.topics.articles, f"g-never-{uuid.uuid4().hex[:6]}"
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, f"k{i}", f"a{i}".encode()) for i in range(5)])
    producer.close()
    child = Child("worker", (sys.executable, str(IDLE_CHILD), "drain", str(tmp_path / "marks")))
    sup = Supervisor([child], backoff=Backoff(0.2, 1.0, 30.0), drain_timeout_s=5.0, tick_s=0.05)
    watchdog = GroupWatchdog(settings, sup, role_groups={"worker": group}, role_reads={"worker": [topic]},
                             interval_s=1.0, stall_s=3.0)
    stalls_before = metrics.OPS_STALLS.labels("worker")._value.get()
    runner = threading.Thread(target=sup.run)
    with structlog.testing.capture_logs() as logs:
        runner.start()
        started = time.monotonic()
        watchdog.start()
        try:
            restarted = wait_until(lambda: sup.restarts().get("worker", 0) >= 1, 30, every_s=0.05)
            after = time.monotonic() - started
        finally:
            watchdog.stop()
            sup.stop()
            runner.join(30)
    print(f"never-joined child restarted {after:.1f} s after it started")
    assert restarted, "the supervisor never restarted a child that was never in its group"
    stalled = [e for e in logs if e["event"] == "worker_stalled"]
    assert stalled and stalled[0]["lag"] == 5 and stalled[0]["seen_in_group"] is False
    assert after <= 2 * 3 + 1 + 1.5
    assert metrics.OPS_STALLS.labels("worker")._value.get() >= stalls_before + 1


def test_the_demo_case_an_evicted_worker_that_never_committed_is_restarted_and_its_backlog_consumed(
    settings: Settings, tmp_path: Path
) -> None:
    """Both checks on, as under ``wirewatch run``: the first process goes deaf while its batch waits for
    "Redis"; it must be replaced, and the replacement must consume all 5 messages."""
    topic, group = settings.kafka.topics.matches, f"g-demo-{uuid.uuid4().hex[:6]}"
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, f"k{i}", f"d{i}".encode()) for i in range(5)])
    producer.close()
    child = Child("worker", (sys.executable, str(DEAF_CHILD), _overrides(settings, member_stall_s=10.0), topic,
                             group, str(tmp_path)))
    sup = Supervisor([child], backoff=Backoff(0.2, 1.0, 30.0), drain_timeout_s=5.0, tick_s=0.05)
    watchdog = GroupWatchdog(settings, sup, role_groups={"worker": group}, role_reads={"worker": [topic]},
                             interval_s=1.0, stall_s=8.0)
    handled = tmp_path / "handled"
    runner = threading.Thread(target=sup.run)
    runner.start()
    watchdog.start()
    try:
        assert wait_until(lambda: (tmp_path / "deaf-since").exists(), 60), "the child never got a batch"
        deaf_at = time.monotonic()
        done = wait_until(lambda: handled.exists() and len(set(handled.read_text().split())) >= 5, 60)
        recovered_after = time.monotonic() - deaf_at
    finally:
        watchdog.stop()
        sup.stop()
        runner.join(30)
    print(f"heartbeat stopped -> backlog consumed by the replacement {recovered_after:.1f} s later")
    assert done, "the backlog was never consumed: the deaf worker was not replaced"
    assert sorted(set(handled.read_text().split())) == [f"d{i}" for i in range(5)]
    assert sup.restarts()["worker"] >= 1
    assert recovered_after <= 6 + 10 + 2.5 + 15  # evicted, stall limit, a check, restart and rejoin


def _end_heartbeat_task_once(loop: bus.ConsumerLoop[bytes]) -> None:
    """The loop's next heartbeat ends kafka-python's heartbeat task with an error (later ones are real again)."""
    coordinator = loop._consumer._coordinator  # type: ignore[union-attr]
    beat = coordinator._do_heartbeat

    async def dies() -> None:
        coordinator._do_heartbeat = beat
        raise RuntimeError("heartbeat task ends (simulated)")

    coordinator._do_heartbeat = dies


def test_a_worker_whose_heartbeat_task_died_while_it_waited_to_retry_rejoins_in_place(settings: Settings) -> None:
    """The heartbeat task ends on an error while the loop waits to retry a batch ("Redis" down); the wait
    swallows the error that ``poll()`` raises once, and the client would stay "stable" until the broker
    evicted it. The watchdog asks it to rejoin instead: the loop keeps its thread and its group, and handles
    the batch once "Redis" is back (which here is when the rejoin was asked for, so only the mend gets it
    there). Bounded: the heartbeat dies within 2 s, the watchdog looks every 2 s, the join takes a few."""
    topic, group = settings.kafka.topics.deliveries, f"g-mend-{uuid.uuid4().hex[:6]}"
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, f"k{i}", f"h{i}".encode()) for i in range(5)])
    rejoins_before = metrics.BUS_REJOINS.labels(group, "heartbeat_task_gone")._value.get()
    stalls_before = sum(metrics.BUS_STALLS.labels(group, r)._value.get()
                        for r in ("poll_stuck", "not_member", "not_consuming"))
    handled: list[bytes] = []
    died = threading.Event()
    loop: bus.ConsumerLoop[bytes]

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        if not died.is_set():
            died.set()
            _end_heartbeat_task_once(loop)
        if metrics.BUS_REJOINS.labels(group, "heartbeat_task_gone")._value.get() == rejoins_before:
            raise ConnectionError("redis unavailable (simulated)")
        handled.extend(c.value for c in batch)

    loop = bus.ConsumerLoop(settings, topics=[topic], group=group, decode=lambda b: b, handle=handle,
                            producer=producer,
                            config=bus.LoopConfig(max_wait_ms=200, session_timeout_ms=6000,
                                                  heartbeat_interval_ms=1000, max_backoff_s=1.0,
                                                  member_stall_s=8.0))
    runner = threading.Thread(target=loop.run, daemon=True)
    with structlog.testing.capture_logs() as logs:
        runner.start()
        try:
            done = wait_until(lambda: len(set(handled)) >= 5, 45, every_s=0.1)
            with Broker(settings) as broker:
                info = broker.describe([group]).get(group)
        finally:
            loop.stop()
            runner.join(30)
            producer.close()
    events = [e["event"] for e in logs]
    print(f"rejoins asked {metrics.BUS_REJOINS.labels(group, 'heartbeat_task_gone')._value.get() - rejoins_before}, "
          f"events {sorted(set(events))}")
    assert died.is_set(), "the loop never got a batch"
    assert done, f"the batch was never handled: {sorted(set(events))}"
    assert sorted(set(handled)) == [f"h{i}".encode() for i in range(5)]
    assert metrics.BUS_REJOINS.labels(group, "heartbeat_task_gone")._value.get() >= rejoins_before + 1
    assert "consumer_rejoin_requested" in events and "consumer_stalled" not in events
    assert sum(metrics.BUS_STALLS.labels(group, r)._value.get()
               for r in ("poll_stuck", "not_member", "not_consuming")) == stalls_before
    assert info is not None and info.members == 1, "the loop is not a member of its group after the mend"


def test_a_heartbeat_task_error_raised_by_a_batch_poll_does_not_end_the_loop(settings: Settings) -> None:
    """The same end while the loop polls for batches: ``poll()`` raises the task's error (not a Kafka one) once.
    The loop asks for a rejoin, polls on and consumes what comes next; before, the worker died with it."""
    topic, group = settings.kafka.topics.deliveries, f"g-mend-batch-{uuid.uuid4().hex[:6]}"
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, "k0", b"first")])
    rejoins_before = metrics.BUS_REJOINS.labels(group, "heartbeat_task_gone")._value.get()
    handled: list[bytes] = []
    died = threading.Event()
    loop: bus.ConsumerLoop[bytes]

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        handled.extend(c.value for c in batch)
        if not died.is_set():
            died.set()
            _end_heartbeat_task_once(loop)

    loop = bus.ConsumerLoop(settings, topics=[topic], group=group, decode=lambda b: b, handle=handle,
                            producer=producer,
                            config=bus.LoopConfig(max_wait_ms=200, session_timeout_ms=6000,
                                                  heartbeat_interval_ms=1000, max_backoff_s=1.0,
                                                  member_stall_s=8.0))
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            crashed.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    with structlog.testing.capture_logs() as logs:
        runner.start()
        try:
            assert wait_until(died.is_set, 45, every_s=0.1), "the loop never got a batch"
            rejoins = metrics.BUS_REJOINS.labels(group, "heartbeat_task_gone")
            asked = wait_until(lambda: rejoins._value.get() > rejoins_before, 20)
            producer.send_many([bus.Outgoing(topic, f"k{i}", f"after{i}".encode()) for i in range(3)])
            done = wait_until(lambda: len(set(handled)) >= 4, 30, every_s=0.1)
        finally:
            loop.stop()
            runner.join(30)
            producer.close()
    failed = [e for e in logs if e["event"] == "poll_failed"]
    print(f"rejoin asked {asked}, handled {handled}, poll_failed {[e.get('error') for e in failed]}")
    assert not crashed, f"the loop died: {crashed!r}"
    assert asked and done, f"handled {handled}; events {sorted({e['event'] for e in logs})}"
    assert sorted(set(handled)) == [b"after0", b"after1", b"after2", b"first"]
    assert any("heartbeat task ends" in str(e.get("error")) for e in failed), failed
