"""What the broker knows about the pipeline: end offsets, consumer-group lag and recent throughput.

Lag is measured from outside the consumers (end offset minus the group's committed offset), so it keeps
growing while a worker is stuck or gone, unlike the in-process gauge a consumer loop updates itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from wirewatch import metrics
from wirewatch.bus import client_config
from wirewatch.log import describe_error, get_logger
from wirewatch.settings import Settings

log = get_logger("ops.lag")


@dataclass(frozen=True)
class PartitionLag:
    """A consumer group's position on one partition. ``committed`` None: the group never committed there."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass(frozen=True)
class GroupInfo:
    """A consumer group as the coordinator describes it: state, members, and members owning no partition."""

    group: str
    state: str
    members: int
    idle_members: int
    topics: tuple[str, ...]
    client_ids: tuple[str, ...] = ()


class Broker:
    """A read-only view of topics and groups. Close it after use."""

    def __init__(self, settings: Settings, *, timeout_s: float = 10.0) -> None:
        conf = client_config(settings)
        self._timeout_ms = int(timeout_s * 1000)
        self._admin = KafkaAdminClient(**conf, client_id=f"{settings.kafka.client_id}-ops",
                                       request_timeout_ms=self._timeout_ms)
        self._consumer = KafkaConsumer(**conf, client_id=f"{settings.kafka.client_id}-ops", group_id=None,
                                       enable_auto_commit=False,
                                       request_timeout_ms=max(self._timeout_ms, 11000))

    def close(self) -> None:
        """Close both clients."""
        with contextlib.suppress(Exception):
            self._consumer.close()
        with contextlib.suppress(Exception):
            self._admin.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def consumer(self) -> KafkaConsumer:
        """The group-less consumer (for reading ranges; assign it partitions yourself)."""
        return self._consumer

    def partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions, empty when it does not exist."""
        found = self._consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(found)]

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """High-water offset per partition."""
        return dict(self._consumer.end_offsets(list(tps), timeout_ms=self._timeout_ms)) if tps else {}

    def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Earliest retained offset per partition."""
        return dict(self._consumer.beginning_offsets(list(tps), timeout_ms=self._timeout_ms)) if tps else {}

    def offsets_at(self, tps: Sequence[TopicPartition], ts_ms: int) -> dict[TopicPartition, int]:
        """Per partition, the first offset stamped at or after ``ts_ms``; the end offset when none is."""
        if not tps:
            return {}
        found = self._consumer.offsets_for_times({tp: ts_ms for tp in tps}, timeout_ms=self._timeout_ms)
        ends = self.end_offsets(tps)
        return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}

    def groups(self) -> list[str]:
        """Consumer group ids known to the cluster."""
        out = []
        for g in self._admin.list_groups():
            gid = g.get("group_id") if isinstance(g, dict) else g[0]
            if gid:
                out.append(str(gid))
        return sorted(out)

    def group_offsets(self, groups: Sequence[str]) -> dict[str, dict[TopicPartition, int]]:
        """Committed offsets of each group, per partition."""
        out: dict[str, dict[TopicPartition, int]] = {}
        for gid in groups:
            raw: Any = self._admin.list_group_offsets({gid: None}).get(gid, {})
            out[gid] = {tp: int(m.offset) for tp, m in raw.items() if m is not None and m.offset >= 0}
        return out

    def describe(self, groups: Sequence[str]) -> dict[str, GroupInfo]:
        """State and membership of each group (groups the coordinator cannot describe are left out)."""
        out: dict[str, GroupInfo] = {}
        for gid in groups:
            try:
                raw: Any = self._admin.describe_groups([gid]).get(gid, {})
            except KafkaError:
                continue
            members = raw.get("members") or []
            topics: set[str] = set()
            idle = 0
            clients = tuple(str(m.get("client_id", "")) for m in members)
            for m in members:
                topics.update((m.get("member_metadata") or {}).get("topics") or [])
                owned = (m.get("member_assignment") or {}).get("assigned_partitions") or []
                idle += not any(a.get("partitions") for a in owned)
            out[gid] = GroupInfo(gid, str(raw.get("group_state", "?")), len(members), idle, tuple(sorted(topics)),
                                 clients)
        return out

    def lags(self, topics: Sequence[str], groups: Sequence[str] | None = None,
             info: dict[str, GroupInfo] | None = None,
             subscribed: Mapping[str, Sequence[str]] | None = None) -> list[PartitionLag]:
        """Lag of every group that committed on, or subscribes to, any of ``topics``, over all their partitions.

        A partition the group never committed on counts from the beginning of the log, as the group's
        consumers start at the earliest offset. ``info`` (from :meth:`describe`) adds the topics that live
        members subscribe to, and ``subscribed`` the topics a group is known to read (group to topics), so a
        group that has not committed yet shows its backlog even when it has no member left to say so.
        """
        wanted = set(topics)
        committed = self.group_offsets(groups if groups is not None else self.groups())
        consumed = {g: {tp.topic for tp in offs} & wanted for g, offs in committed.items()}
        for gid, gi in (info or {}).items():
            consumed.setdefault(gid, set()).update(set(gi.topics) & wanted)
            committed.setdefault(gid, {})
        for gid, known in (subscribed or {}).items():
            consumed.setdefault(gid, set()).update(set(known) & wanted)
            committed.setdefault(gid, {})
        read_topics = sorted({t for ts in consumed.values() for t in ts})
        all_tps = [tp for t in read_topics for tp in self.partitions(t)]
        ends = self.end_offsets(all_tps)
        begins = self.beginning_offsets(all_tps)
        out: list[PartitionLag] = []
        for gid in sorted(consumed):
            for tp in all_tps:
                if tp.topic not in consumed[gid]:
                    continue
                pos = committed[gid].get(tp)
                end = ends.get(tp, 0)
                start = pos if pos is not None else begins.get(tp, 0)
                out.append(PartitionLag(gid, tp.topic, tp.partition, pos, end, max(0, end - start)))
        return out

    def rate(self, topic: str, window_s: float) -> tuple[int, float]:
        """Messages appended to ``topic`` in the last ``window_s`` seconds (by timestamp), and per second."""
        tps = self.partitions(topic)
        since = self.offsets_at(tps, int((time.time() - window_s) * 1000))
        ends = self.end_offsets(tps)
        count = sum(max(0, ends[tp] - since[tp]) for tp in tps)
        return count, count / window_s if window_s > 0 else 0.0


def wait_for_leaders(settings: Settings, topics: Sequence[str], timeout_s: float = 30.0) -> bool:
    """Wait until every partition of ``topics`` has a leader; True when they all do within ``timeout_s``.

    A consumer that joins its group while a new topic's partitions are still leaderless can be assigned
    nothing and keep that empty assignment until its next metadata refresh (minutes), so whoever creates
    topics and then starts consumers waits here first.
    """
    admin = KafkaAdminClient(**client_config(settings), client_id=f"{settings.kafka.client_id}-ops",
                             request_timeout_ms=10000)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                described = admin.describe_topics(list(topics))
                ready = len(described) == len(topics) and all(
                    t.get("error_code", 0) == 0 and t["partitions"]
                    and all(p.get("leader_id", -1) >= 0 for p in t["partitions"]) for t in described)
            except KafkaError:
                ready = False
            if ready or time.monotonic() >= deadline:
                return ready
            time.sleep(0.2)
    finally:
        admin.close()


def pipeline_topics(settings: Settings) -> list[str]:
    """The topics whose consumers we watch."""
    t = settings.kafka.topics
    return [t.articles, t.matches, t.deliveries]


class LagExporter:
    """A daemon thread that publishes group lag and end offsets as gauges every ``interval_s``."""

    def __init__(self, settings: Settings, interval_s: float) -> None:
        self._settings = settings
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-exporter", daemon=True)

    def start(self) -> LagExporter:
        """Begin measuring."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop measuring (returns at once; the thread ends within one interval)."""
        self._stop.set()

    def measure_once(self, broker: Broker) -> list[PartitionLag]:
        """Measure and publish once."""
        topics = pipeline_topics(self._settings)
        groups = broker.groups()
        rows = broker.lags(topics, groups, broker.describe(groups))
        for r in rows:
            metrics.OPS_GROUP_LAG.labels(r.group, r.topic, str(r.partition)).set(r.lag)
        for topic in topics:
            tps = broker.partitions(topic)
            for tp, end in broker.end_offsets(tps).items():
                metrics.OPS_TOPIC_END_OFFSET.labels(tp.topic, str(tp.partition)).set(end)
        return rows

    def _run(self) -> None:
        broker: Broker | None = None
        while not self._stop.is_set():
            try:
                broker = broker or Broker(self._settings)
                self.measure_once(broker)
            except (KafkaError, OSError, ValueError) as exc:
                log.warning("lag_measure_failed", error=describe_error(exc))
                if broker is not None:
                    broker.close()
                broker = None
            self._stop.wait(self._interval)
        if broker is not None:
            broker.close()
