"""The consumer loop under faults, on the real broker: a DLQ that cannot be written, errors that retrying
cannot fix, a rebalance while a batch waits to be retried."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from wirewatch import bus, metrics
from wirewatch.ops.lag import Broker
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration


def _wait(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every_s)
    return bool(pred())


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
        assert _wait(lambda: metrics.BUS_DLQ_RETRIES.labels(group)._value.get() >= retries_before + 3, 60), \
            f"no DLQ retries seen; loop ended with {runner.error!r}"
        assert runner.thread.is_alive(), f"the loop died: {runner.error!r}"
        assert _committed(settings, group, topic).get(0, 0) <= 1, "committed past the poison record"
        bus.ensure_topics(settings, {settings.dlq(topic): 1})
        assert _wait(lambda: _committed(settings, group, topic).get(0) == 3, 60), "never committed after the DLQ"
    finally:
        runner.stop()
        producer.close()
        loop_producer.close()
    assert runner.error is None
    assert _dlq_count(settings, topic) == 1
    assert sorted(set(handled)) == [b"ok-0", b"ok-2"]
