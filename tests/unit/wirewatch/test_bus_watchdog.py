"""The consumer loop's liveness checks: a poll stuck past the limit, a consumer that is no live group member
and one that does not consume what its partitions hold are reported, and a worker process exits.

The clients here are stand-ins; the real broker's version of the member check is in
tests/integration/test_liveness.py.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import threading
import time

from kafka.coordinator.base import BaseCoordinator
from kafka.coordinator.heartbeat import Heartbeat
from kafka.future import Future
from kafka.structs import ConsumerGroupMetadata, MemberState, TopicPartition

from wirewatch import bus, metrics
from wirewatch.liveness import Liveness, Membership, heartbeat_gone, join_abandoned, membership
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
    assert "consumer_stalled" in proc.stdout + proc.stderr and "poll_stuck" in proc.stdout + proc.stderr
    assert time.monotonic() - started < 30


def test_loop_in_a_thread_reports_a_stuck_poll_without_exiting() -> None:
    loop: bus.ConsumerLoop[bytes] = bus.ConsumerLoop(
        load_settings(None), topics=["t"], group="g-thread", decode=bytes, handle=lambda b: None,
        producer=None, config=bus.LoopConfig(poll_stall_s=0.4))  # type: ignore[arg-type]
    before = metrics.BUS_POLL_STALLS.labels("g-thread")._value.get()
    loop.liveness.poll_since = time.monotonic() - 10
    loop.liveness.start(exit_on_stall=False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and metrics.BUS_POLL_STALLS.labels("g-thread")._value.get() == before:
        time.sleep(0.05)
    loop.liveness.stop()
    assert metrics.BUS_POLL_STALLS.labels("g-thread")._value.get() == before + 1
    assert threading.main_thread().is_alive()


class FakeConsumer:
    """Just what the liveness checks read from a KafkaConsumer."""

    def __init__(self) -> None:
        self.state = MemberState.STABLE
        self.tps = {TopicPartition("t", 0)}
        self.high: int | None = 10
        self.pos = 10
        self.paused_tps: set[TopicPartition] = set()

        class _Coordinator:
            heartbeat = Heartbeat(group_id="g", session_timeout_ms=10000, heartbeat_interval_ms=3000)
            coordinator_id: int | str | None = "coordinator-1"

        self._coordinator = _Coordinator()

        class _Conn:
            connected = True

        class _Manager:
            _conns = {1: _Conn()}

        class _Client:
            _manager = _Manager()

        self._client = _Client()
        self.conn = _Manager._conns[1]

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata("g", 1, "m", None, self.state)

    def assignment(self) -> set[TopicPartition]:
        return self.tps

    def paused(self) -> set[TopicPartition]:
        return self.paused_tps

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.pos


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watched(c: FakeConsumer, clock: Clock) -> Liveness:
    live = Liveness("g", poll_stall_s=60, member_stall_s=30, session_timeout_s=10, clock=clock)
    live.watch(c)  # type: ignore[arg-type]
    return live


def test_kafka_python_internals_the_member_check_reads_are_there() -> None:
    beat = Heartbeat(group_id="g", session_timeout_ms=10000, heartbeat_interval_ms=3000)
    assert isinstance(beat.last_receive, float) and isinstance(beat.last_reset, float)
    assert MemberState.STABLE == "<stable>" and "state" in ConsumerGroupMetadata._fields


def test_a_member_whose_heartbeats_stopped_is_stalled_after_the_limit() -> None:
    clock, c = Clock(), FakeConsumer()
    live = _watched(c, clock)
    c._coordinator.heartbeat.last_reset = clock.now
    assert live.check() is None
    assert membership(c, clock.now) == Membership("stable", 0.0, 1, True, True)  # type: ignore[arg-type]
    clock.now += 10  # the last acknowledged heartbeat is a session old: the broker has let it go
    assert live.check() is None
    clock.now += 25
    assert live.check() is None
    clock.now += 6  # 31 s since it was last live
    assert live.check() == "not_member"


def test_no_broker_answering_holds_the_member_clock() -> None:
    clock, c = Clock(), FakeConsumer()
    live = _watched(c, clock)
    c.state = MemberState.UNJOINED
    c.conn.connected = False  # the broker is restarting: a new process could not join either
    clock.now += 120
    assert live.check() is None
    c.conn.connected = True
    clock.now += 29
    assert live.check() is None
    clock.now += 2
    assert live.check() == "not_member"


def test_a_poll_and_a_lag_through_a_broker_outage_are_counted_from_when_the_broker_answers_again() -> None:
    clock, c = Clock(), FakeConsumer()
    live = Liveness("g", poll_stall_s=20, member_stall_s=30, session_timeout_s=10, clock=clock)
    live.watch(c)  # type: ignore[arg-type]
    c.pos, c.high = 5, 10  # the last fetch before the outage saw more to read
    live.polled(c, 0)  # type: ignore[arg-type]
    live.poll_since = clock.now  # a poll that began as the broker died and has not returned
    c.conn.connected = False
    c._coordinator.coordinator_id = None
    for _ in range(12):  # 60 s of outage, checked every 5 s
        clock.now += 5
        assert live.check() is None
    c.conn.connected = True  # the broker answers, its coordinator is not known yet
    assert live.check() is None
    c._coordinator.coordinator_id = "coordinator-1"
    clock.now += 19
    assert live.check() is None
    clock.now += 2  # the poll still hangs 21 s after the broker came back
    assert live.check() == "poll_stuck"
    live.poll_since = None
    clock.now += 10  # 31 s since the broker answered: still in the group with nothing read is not consuming
    c._coordinator.heartbeat.last_receive = clock.now
    assert live.check() == "not_consuming"


def test_a_broker_that_answers_but_names_no_coordinator_holds_the_clocks_for_one_more_limit_only() -> None:
    clock, c = Clock(), FakeConsumer()
    live = _watched(c, clock)
    c.state = MemberState.UNJOINED
    c._coordinator.coordinator_id = None  # connected, the broker still loading its groups
    clock.now += 30
    assert live.check() is None  # held: the broker is back but not serving groups yet
    clock.now += 29
    assert live.check() is None
    clock.now += 2  # the hold ends 30 s after the broker first answered ...
    assert live.check() is None
    clock.now += 29  # ... and the member limit runs from there: no coordinator for 90 s, the client is stuck
    assert live.check() == "not_member"


def test_a_member_still_rebalancing_after_the_limit_is_stalled_and_acknowledged_heartbeats_keep_one_alive() -> None:
    clock, c = Clock(), FakeConsumer()
    live = _watched(c, clock)
    for _ in range(20):  # a minute of heartbeats every 3 s
        clock.now += 3
        c._coordinator.heartbeat.last_receive = clock.now
        assert live.check() is None
    c.state = MemberState.REBALANCING
    clock.now += 29
    assert live.check() is None
    clock.now += 2
    assert live.check() == "not_member"


def test_owning_partitions_with_lag_and_polling_nothing_is_stalled_unless_the_loop_waits() -> None:
    clock, c = Clock(), FakeConsumer()
    live = _watched(c, clock)
    c.pos, c.high = 5, 10
    for _ in range(32):
        clock.now += 1
        c._coordinator.heartbeat.last_receive = clock.now
        live.polled(c, 0)  # type: ignore[arg-type]
    live.waiting = True
    assert live.check() is None
    live.waiting = False
    assert live.check() == "not_consuming"
    live.polled(c, 3)  # type: ignore[arg-type]
    assert live.check() is None
    c.paused_tps = set(c.tps)  # paused partitions are not expected to be consumed
    for _ in range(40):
        clock.now += 1
        c._coordinator.heartbeat.last_receive = clock.now
        live.polled(c, 0)  # type: ignore[arg-type]
    assert live.check() is None


def test_kafka_python_internals_the_heartbeat_mend_reads_are_there() -> None:
    init = inspect.getsource(BaseCoordinator.__init__)
    assert "self._heartbeat_loop_future = None" in init and "self._heartbeat_closed = False" in init
    assert callable(BaseCoordinator.request_rejoin) and hasattr(Future(), "is_done")


class MendableCoordinator:
    """A coordinator stand-in whose heartbeat task can be running, ended or closed."""

    def __init__(self) -> None:
        self.heartbeat = Heartbeat(group_id="g", session_timeout_ms=10000, heartbeat_interval_ms=3000)
        self.coordinator_id = "coordinator-1"
        self._heartbeat_closed = False
        self._heartbeat_loop_future: Future | None = Future()  # running: not done
        self.rejoins = 0

    def request_rejoin(self) -> None:
        self.rejoins += 1


def test_a_stable_client_whose_heartbeat_task_ended_is_asked_to_rejoin_once_a_session() -> None:
    clock, c = Clock(), FakeConsumer()
    coordinator = MendableCoordinator()
    c._coordinator = coordinator  # type: ignore[assignment]
    live = _watched(c, clock)
    before = metrics.BUS_REJOINS.labels("g", "heartbeat_task_gone")._value.get()
    assert live.check() is None and coordinator.rejoins == 0  # a running task: nothing to mend
    coordinator._heartbeat_loop_future.failure(RuntimeError("heartbeat loop error"))  # type: ignore[union-attr]
    assert heartbeat_gone(c)  # type: ignore[arg-type]
    assert live.check() is None and coordinator.rejoins == 1
    coordinator._heartbeat_loop_future = None  # poll() raised the error once and forgot the task
    clock.now += 5
    assert live.check() is None and coordinator.rejoins == 1  # asked already, within the session timeout
    clock.now += 6
    assert live.check() is None and coordinator.rejoins == 2
    assert metrics.BUS_REJOINS.labels("g", "heartbeat_task_gone")._value.get() == before + 2
    c.state = MemberState.REBALANCING  # rejoining: its new heartbeat task starts with the join
    clock.now += 20
    assert live.check() is None and coordinator.rejoins == 2
    assert live.mend(c, error="RuntimeError: heartbeat loop error")  # type: ignore[arg-type]  # the loop's call
    assert coordinator.rejoins == 3
    coordinator._heartbeat_loop_future = Future()  # a new task runs
    assert not live.mend(c, error="ValueError: a bug elsewhere")  # type: ignore[arg-type]  # not the heartbeat's


def test_a_closed_heartbeat_is_not_mended_and_the_member_check_still_ends_the_worker() -> None:
    clock, c = Clock(), FakeConsumer()
    coordinator = MendableCoordinator()
    coordinator._heartbeat_closed = True  # closed on purpose (the consumer is closing, or a test's deaf child)
    coordinator._heartbeat_loop_future = None
    c._coordinator = coordinator  # type: ignore[assignment]
    live = _watched(c, clock)
    coordinator.heartbeat.last_reset = clock.now
    clock.now += 41
    assert live.check() == "not_member" and coordinator.rejoins == 0


class JoiningCoordinator:
    """A coordinator stand-in in some group state, whose ``need_rejoin()`` answer is set by the test."""

    def __init__(self, state: MemberState, needs_rejoin: bool) -> None:
        self.state = state
        self.needs_rejoin = needs_rejoin
        self._heartbeat_closed = False
        self.rejoins = 0

    def need_rejoin(self) -> bool:
        return self.needs_rejoin

    def request_rejoin(self) -> None:
        self.rejoins += 1
        self.needs_rejoin = True


def test_a_join_no_poll_will_finish_is_resumed_and_counted() -> None:
    live = _watched(FakeConsumer(), Clock())
    before = metrics.BUS_REJOINS.labels("g", "join_abandoned")._value.get()
    cases = [  # (state, need_rejoin(), heartbeat closed) -> abandoned?
        (MemberState.REBALANCING, False, False, True),   # the leader's assignment made the snapshots equal
        (MemberState.REBALANCING, True, False, False),   # the next poll awaits the join itself
        (MemberState.STABLE, False, False, False),
        (MemberState.UNJOINED, False, False, False),
        (MemberState.REBALANCING, False, True, False),   # closing: nothing to resume
    ]
    for state, needs, closed, abandoned in cases:
        c = FakeConsumer()
        coordinator = JoiningCoordinator(state, needs)
        coordinator._heartbeat_closed = closed
        c._coordinator = coordinator  # type: ignore[assignment]
        assert join_abandoned(c) is abandoned, (state, needs, closed)  # type: ignore[arg-type]
        assert live.resume_join(c) is abandoned  # type: ignore[arg-type]
        assert coordinator.rejoins == int(abandoned)
        assert not live.resume_join(c)  # type: ignore[arg-type]  # asked: the next poll drives the join
    assert metrics.BUS_REJOINS.labels("g", "join_abandoned")._value.get() == before + 1


def test_kafka_python_internals_the_join_mend_reads_are_there() -> None:
    """``poll()`` joins only while ``need_rejoin()`` holds, and a finished join is what sets the state stable."""
    from kafka.coordinator.consumer import ConsumerCoordinator

    assert "if self.need_rejoin():" in inspect.getsource(ConsumerCoordinator.poll)
    assert "self._assignment_snapshot = self._metadata_snapshot" in inspect.getsource(
        ConsumerCoordinator._perform_assignment)
    join = inspect.getsource(BaseCoordinator.join_group_async)
    assert "while self.need_rejoin():" in join and "self.state = MemberState.STABLE" in join
