"""The consumer loop under faults, on the real broker: a DLQ that cannot be written, errors that retrying
cannot fix, a rebalance while a batch waits to be retried."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kafka.errors import TopicAuthorizationFailedError

from tests.integration.ops_support import wait_until
from wirewatch import bus, metrics
from wirewatch.ops.lag import Broker
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration




def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    with Broker(settings) as broker:
        offs = broker.group_offsets([group]).get(group, {})
    return {tp.partition: o for tp, o in offs.items() if tp.topic == topic}


def _dlq_count(settings: Settings, topic: str) -> int:
    with Broker(settings) as broker:
        tps = broker.partitions(settings.dlq(topic))
        return sum(broker.end_offsets(tps).values()) if tps else 0


class Runner:
    """A loop in a thread that records what ended it."""

    def __init__(self, loop: bus.ConsumerLoop[Any]) -> None:
        self.loop = loop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            self.error = exc

    def stop(self) -> None:
        self.loop.stop()
        self.thread.join(30)


def test_a_dlq_that_cannot_be_written_holds_the_batch_uncommitted_until_it_can(settings: Settings) -> None:
    """The DLQ topic does not exist (and the broker does not create topics), so each DLQ write fails after
    the producer's 1 s metadata wait. Before the fix the ProduceError escaped ``run()`` and the worker died."""
    topic, group = f"faults-{uuid.uuid4().hex[:6]}", f"g-dlqfail-{uuid.uuid4().hex[:6]}"
    bus.ensure_topics(settings, {topic: 1})  # and no ``<topic>.dlq``
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, f"k{i}", v.encode()) for i, v in enumerate(["ok-0", "poison", "ok-2"])])
    handled: list[bytes] = []

    def handle(batch: list[bus.Consumed[bytes]]) -> list[tuple[bus.Consumed[bytes], str]]:
        handled.extend(c.value for c in batch if c.value != b"poison")
        return [(c, "cannot be handled") for c in batch if c.value == b"poison"]

    loop_producer = bus.Producer(settings, client_id="loop", max_block_ms=1000)
    retries_before = metrics.BUS_DLQ_RETRIES.labels(group)._value.get()
    runner = Runner(bus.ConsumerLoop(settings, topics=[topic], group=group, decode=lambda b: b, handle=handle,
                                     producer=loop_producer,
                                     config=bus.LoopConfig(max_backoff_s=1.0, dlq_min_count=1000)))
    try:
        assert wait_until(lambda: metrics.BUS_DLQ_RETRIES.labels(group)._value.get() >= retries_before + 3, 60), \
            f"no DLQ retries seen; loop ended with {runner.error!r}"
        assert runner.thread.is_alive(), f"the loop died: {runner.error!r}"
        assert _committed(settings, group, topic).get(0, 0) <= 1, "committed past the poison record"
        bus.ensure_topics(settings, {settings.dlq(topic): 1})
        assert wait_until(lambda: _committed(settings, group, topic).get(0) == 3, 60), "never committed after the DLQ"
    finally:
        runner.stop()
        producer.close()
        loop_producer.close()
    assert runner.error is None
    assert _dlq_count(settings, topic) == 1
    assert sorted(set(handled)) == [b"ok-0", b"ok-2"]


def _loop(settings: Settings, topic: str, group: str, handle: Any, producer: bus.Producer) -> bus.ConsumerLoop[bytes]:
    return bus.ConsumerLoop(settings, topics=[topic], group=group, decode=lambda b: b, handle=handle,
                            producer=producer, config=bus.LoopConfig(max_backoff_s=0.5, dlq_min_count=1000))


def test_a_redis_acl_denial_stops_the_worker_with_a_clear_message_instead_of_retrying(settings: Settings) -> None:
    """Redis answers NOPERM for SET to this user (a real ACL on the real server). Before the fix every
    RedisError was transient: the batch was retried forever and its partition stalled."""
    topic, group = settings.kafka.topics.articles, f"g-noperm-{uuid.uuid4().hex[:6]}"
    user = f"limited-{uuid.uuid4().hex[:6]}"
    admin = redis.Redis.from_url(settings.redis_url)
    admin.acl_setuser(user, enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all", "-set"])
    limited = redis.Redis.from_url(settings.redis_url, username=user, password="secret")
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, f"k{i}", f"v{i}".encode()) for i in range(3)])

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        for c in batch:
            limited.set(f"{settings.redis.key_prefix}{c.offset}", c.value)

    runner = Runner(_loop(settings, topic, group, handle, producer))
    try:
        runner.thread.join(30)
        assert not runner.thread.is_alive(), "the worker kept retrying a permission it will never get"
    finally:
        runner.stop()
        producer.close()
        admin.acl_deluser(user)
    assert isinstance(runner.error, bus.WorkerFatal), repr(runner.error)
    message = str(runner.error)
    assert group in message and "NoPermissionError" in message and "ACLs" in message
    assert _committed(settings, group, topic) == {}
    assert _dlq_count(settings, topic) == 0


def test_a_redis_error_about_one_record_parks_that_record_and_the_others_go_on(settings: Settings) -> None:
    """WRONGTYPE from the real server for one record's key is about that record, not about Redis: before
    the fix it was retried forever with the whole batch; now the record goes to the DLQ."""
    topic, group = settings.kafka.topics.articles, f"g-wrongtype-{uuid.uuid4().hex[:6]}"
    r = redis.Redis.from_url(settings.redis_url)
    prefix = settings.redis.key_prefix
    r.rpush(f"{prefix}story:bad", "a list, not a string")
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, "k", name.encode()) for name in ("good-1", "bad", "good-2")])
    handled: list[str] = []

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        for c in batch:
            r.get(f"{prefix}story:{c.value.decode()}")
        handled.extend(c.value.decode() for c in batch)

    runner = Runner(_loop(settings, topic, group, handle, producer))
    try:
        assert wait_until(lambda: sum(_committed(settings, group, topic).values()) == 3, 30), \
            f"not all committed; loop ended with {runner.error!r}"
    finally:
        runner.stop()
        producer.close()
    assert runner.error is None
    assert sorted(set(handled)) == ["good-1", "good-2"]
    assert _dlq_count(settings, topic) == 1


@pytest.mark.parametrize("error", [TopicAuthorizationFailedError("wirewatch.matches"),
                                   PermissionError(13, "Permission denied", "/var/lib/wirewatch/state")],
                         ids=["kafka-authorization", "permission-error"])
def test_authorization_and_permission_errors_are_fatal_not_retried(settings: Settings,
                                                                    error: Exception) -> None:
    topic, group = settings.kafka.topics.articles, f"g-fatal-{uuid.uuid4().hex[:6]}"
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, "k", b"v")])
    calls: list[int] = []

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        calls.append(len(batch))
        raise error

    runner = Runner(_loop(settings, topic, group, handle, producer))
    try:
        runner.thread.join(30)
    finally:
        runner.stop()
        producer.close()
    assert isinstance(runner.error, bus.WorkerFatal), repr(runner.error)
    assert type(error).__name__ in str(runner.error)
    assert len(calls) == 1, "retried an error that retrying cannot fix"
    assert _committed(settings, group, topic) == {} and _dlq_count(settings, topic) == 0


def test_records_fetched_for_partitions_gained_in_a_rebalance_during_a_retry_wait_are_not_dropped(
    settings: Settings,
) -> None:
    """Two members each hold partitions and each wait to retry a batch ("Redis is down"). B leaves; A is
    handed B's partitions inside one of its waiting polls, and that poll returns their records. Before the
    fix the wait threw them away and moved past them: once "Redis" was back, A never handled them."""
    topic, group = settings.kafka.topics.matches, f"g-rebal-{uuid.uuid4().hex[:6]}"
    producer = bus.Producer(settings, client_id="test")
    values = [f"r{i}" for i in range(60)]
    producer.send_many([bus.Outgoing(topic, f"key-{i}", v.encode()) for i, v in enumerate(values)])
    redis_back = threading.Event()
    handled: list[str] = []
    waits: list[str] = []

    def handler(name: str) -> Callable[[list[bus.Consumed[bytes]]], None]:
        def handle(batch: list[bus.Consumed[bytes]]) -> None:
            if not redis_back.is_set():
                waits.append(name)
                raise redis.ConnectionError("Connection refused (simulated outage)")
            handled.extend(c.value.decode() for c in batch)
        return handle

    def loop(name: str) -> bus.ConsumerLoop[bytes]:
        return bus.ConsumerLoop(settings, topics=[topic], group=group, decode=lambda b: b, handle=handler(name),
                                producer=producer,
                                config=bus.LoopConfig(max_backoff_s=8.0, session_timeout_ms=6000,
                                                      heartbeat_interval_ms=500))

    a = Runner(loop("a"))
    b = Runner(loop("b"))
    try:
        assert wait_until(lambda: {"a", "b"} <= set(waits), 60), f"both members never waited: {waits}"
        time.sleep(1.0)
        b.stop()  # leaves the group: A gets B's partitions while it waits
        time.sleep(12.0)
        redis_back.set()
        assert wait_until(lambda: set(handled) >= set(values), 60), \
            f"{len(set(values) - set(handled))} of {len(values)} never handled"
        assert wait_until(lambda: sum(_committed(settings, group, topic).values()) == len(values), 30)
    finally:
        redis_back.set()
        a.stop()
        b.stop()
        producer.close()
    assert a.error is None and b.error is None
