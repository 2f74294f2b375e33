"""A join the client abandons half-way is finished by the loop, on the real broker.

kafka-python 3.0.12 drives a join from ``poll()`` only while ``need_rejoin()`` holds. A rejoin asked for by a
metadata change (partitions added to a subscribed topic, or the first metadata update after ``subscribe()``)
stops "needing" a rejoin as soon as the leader has computed the new assignment. When the poll that started
the join returned before the join finished, no later poll awaits it: the client stays "rebalancing" with no
partitions, stops heartbeating and is evicted. Every worker start used to go through such a second join,
and about one start in eight on a loaded 2-core machine ended that way: a worker that never joined and
that nothing restarted (CI: the alerts CLI and the Redis fault tests got no alert at all).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer

from tests.integration.ops_support import wait_until
from wirewatch import bus, metrics
from wirewatch.liveness import join_abandoned
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration]


def _state(consumer: KafkaConsumer) -> str:
    return str(consumer._coordinator.state).strip("<>")


def _abandon_a_join(settings: Settings, topic: str) -> tuple[bus.ConsumerLoop[bytes], KafkaConsumer]:
    """A loop's consumer, joined, whose rejoin after a partition increase was left in flight by a short poll."""
    loop: bus.ConsumerLoop[bytes] = bus.ConsumerLoop(
        settings, topics=[topic], group=f"g-abandon-{uuid.uuid4().hex[:6]}", decode=lambda b: b,
        handle=lambda items: None, producer=bus.Producer(settings, client_id="test"),
        config=bus.LoopConfig(session_timeout_ms=6000, heartbeat_interval_ms=1000))
    consumer = loop._make_consumer()
    assert wait_until(lambda: bool(loop._poller.poll(consumer, 200) is not None and consumer.assignment()), 30)
    before = len(consumer.assignment())
    bus.ensure_topics(settings, {topic: before + 2})
    consumer._client.cluster.request_update()
    snapshot = lambda: consumer._coordinator._metadata_snapshot.get(topic, set())  # noqa: E731
    assert wait_until(lambda: len(snapshot()) == before + 2, 20), "the client never saw the new partitions"
    # Polls too short to finish a join, as a loop's poll can be on a busy machine: the first one that starts
    # the join returns while it is in flight.
    assert wait_until(lambda: consumer.poll(timeout_ms=1) is not None and _state(consumer) == "rebalancing", 10)
    assert wait_until(lambda: join_abandoned(consumer), 10), "the join was still needed: the poll awaited it"
    return loop, consumer


def test_without_help_the_client_never_finishes_an_abandoned_join(settings: Settings) -> None:
    """The upstream behaviour the loop guards against, pinned so that a kafka-python upgrade that fixes it
    (or changes it) shows here: polls alone never bring the client back to a stable generation."""
    loop, consumer = _abandon_a_join(settings, settings.kafka.topics.matches)
    try:
        deadline = time.monotonic() + 8  # past the 6-s session timeout: the broker has evicted it by then
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        print(f"after 8 s of polls: {_state(consumer)}, {len(consumer.assignment())} partitions")
        assert _state(consumer) == "rebalancing" and join_abandoned(consumer)
    finally:
        consumer.close(autocommit=False, timeout_ms=2000)


def test_the_loops_poll_finishes_an_abandoned_join_and_consumes(settings: Settings) -> None:
    topic = settings.kafka.topics.matches
    loop, consumer = _abandon_a_join(settings, topic)
    mended = metrics.BUS_REJOINS.labels(loop.group, "join_abandoned")
    asked = mended._value.get()
    producer = bus.Producer(settings, client_id="test")
    producer.send_many([bus.Outgoing(topic, f"k{i}", f"m{i}".encode()) for i in range(20)])
    producer.close()
    got: list[Any] = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 20 and len(got) < 20:
            for records in loop._poller.poll(consumer, 200).values():
                got.extend(records)
        took = time.monotonic() - started
        print(f"member again and 20 records read {took:.1f} s after the join was abandoned; "
              f"{mended._value.get() - asked:.0f} rejoin(s) asked")
        assert mended._value.get() >= asked + 1
        assert _state(consumer) == "stable" and len(consumer.assignment()) == settings.kafka.partitions + 2
        assert sorted(r.value for r in got) == sorted(f"m{i}".encode() for i in range(20))
    finally:
        consumer.close(autocommit=False, timeout_ms=2000)


_STARTING_WORKER = """
import json, sys, time
from wirewatch import bus
from wirewatch.settings import load_settings
settings = load_settings(None, **json.loads(sys.argv[1]))
loop = bus.ConsumerLoop(settings, topics=[sys.argv[2]], group=sys.argv[3], decode=lambda b: b,
                        handle=lambda items: None, producer=None)
revoked, assigned_at = [], None
loop._rebalances.revoked = lambda parts: revoked.append(len(parts))
consumer = loop._make_consumer()
started = time.monotonic()
while time.monotonic() - started < 30 and not (assigned_at and time.monotonic() - assigned_at > 3):
    loop._poller.poll(consumer, 200)
    if assigned_at is None and consumer.assignment():
        assigned_at, revoked[:] = time.monotonic(), []
print(json.dumps({"generation": consumer._coordinator._generation.generation_id, "revoked": revoked,
                  "state": str(consumer._coordinator.state),
                  "first_assignment_s": assigned_at and assigned_at - started}))
consumer.close(autocommit=False, timeout_ms=2000)
"""


def test_a_starting_worker_joins_its_group_once(settings: Settings) -> None:
    """A fresh worker process waits for its subscription's metadata before the first join, so no metadata
    change follows the first assignment: one generation, no revocation. Every start used to join twice (the
    first join ran before the client knew its topics' partitions), and the second join was the one that
    could be abandoned."""
    overrides = {"data_dir": str(settings.data_dir), "stack": settings.stack.model_dump(mode="json"),
                 "kafka": settings.kafka.model_dump(mode="json")}
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", _STARTING_WORKER, json.dumps(overrides),
                              settings.kafka.topics.matches, f"g-once-{uuid.uuid4().hex[:6]}"],
                             capture_output=True, text=True, timeout=90, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("\n".join(str(r) for r in runs))
    assert all(r["generation"] == 1 and r["revoked"] == [] and r["state"] == "<stable>" for r in runs), runs
