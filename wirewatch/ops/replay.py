"""``wirewatch replay``: run a time range of articles through classification and alerting again.

The articles appended to the articles topic between two times (found with ``offsets_for_times``) are
produced to the same topic again, unchanged, with headers that mark them as a replay:

- ``wirewatch.replay``: the replay's id (every record of one run carries the same id);
- ``wirewatch.replay.source``: ``topic:partition:offset`` of the original record;
- ``wirewatch.replay.topic``: present only with ``--topic``: the one topic id to classify against.

Classify re-scores them (setting ``Match.replay``) and alerts folds and delivers as usual: the alerts
ledger keys each notification by (subscription, story), so a story already notified is not sent again,
while one that was missed (a topic added later, a worker that was down) is. Records that already carry
``wirewatch.replay`` are skipped, so replaying a range twice never doubles the replays inside it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from kafka import TopicPartition

from wirewatch import bus
from wirewatch.bus import REPLAY_HEADER, REPLAY_SOURCE_HEADER, REPLAY_TOPIC_HEADER
from wirewatch.log import get_logger
from wirewatch.ops.lag import Broker
from wirewatch.settings import Settings

log = get_logger("ops.replay")

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ReplayError(ValueError):
    """A replay that cannot run as asked (bad times, missing topic); the message says what to change."""


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``now``, a duration ago (``30m``, ``-2h``, ``1d``) or an ISO 8601 time (UTC when no offset is given).

    Raises:
        ReplayError: when ``text`` is none of those.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    m = _RELATIVE.match(value)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReplayError(f"cannot read time {text!r}: use ISO 8601 (2026-11-28T06:00:00Z), "
                          "a duration ago (30m, 2h, 1d) or 'now'") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class ReplayResult:
    """What a replay did. ``ranges`` maps ``partition`` to the ``[start, end)`` offsets read."""

    replay_id: str
    topic: str
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    produced: int = 0
    skipped_replays: int = 0
    dry_run: bool = False

    @property
    def found(self) -> int:
        """Records inside the time range."""
        return sum(end - start for start, end in self.ranges.values())


def plan(broker: Broker, topic: str, start: datetime, end: datetime) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition, the offsets ``[first at or after start, first at or after end)``.

    Raises:
        ReplayError: when ``end`` is not after ``start`` or the topic does not exist.
    """
    if end <= start:
        raise ReplayError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    tps = broker.partitions(topic)
    if not tps:
        raise ReplayError(f"topic {topic!r} does not exist (run `wirewatch stack up` or check kafka.topics)")
    lo = broker.offsets_at(tps, int(start.timestamp() * 1000))
    hi = broker.offsets_at(tps, int(end.timestamp() * 1000))
    return {tp: (lo[tp], max(lo[tp], hi[tp])) for tp in tps}


def replay(
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    topic_id: str | None = None,
    dry_run: bool = False,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Re-produce the articles appended between ``start`` and ``end``; see the module docstring.

    Returns once Kafka acknowledged every replayed record.

    Raises:
        ReplayError: bad range or missing topic.
        wirewatch.bus.ProduceError: Kafka did not acknowledge a batch (records before it were replayed).
    """
    topic = settings.kafka.topics.articles
    result = ReplayResult(replay_id=f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", topic=topic,
                          dry_run=dry_run)
    with Broker(settings) as broker:
        ranges = plan(broker, topic, start, end)
        result.ranges = {tp.partition: r for tp, r in ranges.items()}
        log.info("replay_planned", replay_id=result.replay_id, topic=topic, found=result.found,
                 start=start.isoformat(), end=end.isoformat(), topic_id=topic_id, dry_run=dry_run)
        if dry_run or not result.found:
            return result
        producer = bus.Producer(settings, client_id="replay")
        try:
            _copy(broker, producer, ranges, result, topic_id, batch, progress)
        finally:
            producer.close()
    log.info("replay_done", replay_id=result.replay_id, produced=result.produced,
             skipped_replays=result.skipped_replays)
    return result


def _copy(
    broker: Broker,
    producer: bus.Producer,
    ranges: dict[TopicPartition, tuple[int, int]],
    result: ReplayResult,
    topic_id: str | None,
    batch: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    consumer = broker.consumer
    todo = {tp: r for tp, r in ranges.items() if r[1] > r[0]}
    consumer.assign(sorted(todo))
    for tp, (lo, _) in todo.items():
        consumer.seek(tp, lo)
    marks = [(REPLAY_HEADER, result.replay_id.encode())]
    if topic_id:
        marks.append((REPLAY_TOPIC_HEADER, topic_id.encode()))
    pending: list[bus.Outgoing] = []
    done = 0
    idle_deadline = time.monotonic() + 30.0
    while todo:
        polled = consumer.poll(timeout_ms=500, max_records=batch)
        if not polled and time.monotonic() > idle_deadline:
            raise ReplayError(f"could not read partitions {sorted(tp.partition for tp in todo)} within 30s")
        for tp, records in polled.items():
            hi = todo.get(tp, (0, 0))[1]
            for r in records:
                if tp not in todo or r.offset >= hi:
                    break
                done += 1
                headers = list(r.headers or [])
                if any(k == REPLAY_HEADER for k, _ in headers):
                    result.skipped_replays += 1
                    continue
                source = f"{r.topic}:{r.partition}:{r.offset}".encode()
                pending.append(bus.Outgoing(result.topic, r.key, r.value or b"",
                                            [*headers, *marks, (REPLAY_SOURCE_HEADER, source)]))
            if tp in todo and consumer.position(tp) >= hi:
                del todo[tp]
                consumer.pause(tp)
        if polled:
            idle_deadline = time.monotonic() + 30.0
        if len(pending) >= batch or (pending and not todo):
            result.produced += producer.send_many(pending)
            pending = []
            if progress is not None:
                progress(done, result.found)
    consumer.assign([])
