"""Helpers for the end-to-end guarantee tests: a feed that grows over time, a private local stack whose
broker a test may kill, and readers of whole Kafka topics."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tests.integration.ingest_server import respond, rss
from wirewatch import stack
from wirewatch.records import Match, decode
from wirewatch.settings import Settings


class GrowingFeed:
    """An RSS feed whose entries appear one every ``every_s`` once :meth:`begin` was called (newest first).

    Records the link of every entry it has served, so a test knows exactly what a feed gave out.
    """

    def __init__(self, entries: list[dict[str, str]], every_s: float) -> None:
        self.entries = entries
        self.every_s = every_s
        self.started: float | None = None
        self.served: set[str] = set()
        self.lock = threading.Lock()

    def begin(self) -> None:
        self.started = time.monotonic()

    def visible(self) -> int:
        if self.started is None:
            return 0
        return min(len(self.entries), 1 + int((time.monotonic() - self.started) / self.every_s))

    def done(self) -> bool:
        return self.visible() == len(self.entries)

    def __call__(self, h: BaseHTTPRequestHandler) -> None:
        shown = self.entries[: self.visible()]
        with self.lock:
            self.served |= {e["link"] for e in shown}
        items = [e | {"pubDate": formatdate(time.time() - 60 + i, usegmt=True)} for i, e in enumerate(shown)]
        respond(h, 200, rss(list(reversed(items))))


def private_stack_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a Kafka + Redis of this test's own (free ports, ``data_dir``), merged with ``overrides``."""
    from wirewatch.settings import load_settings

    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "stack": {"kafka_port": stack.free_port(), "controller_port": stack.free_port(),
                  "redis_port": stack.free_port(), "kafka_heap": "384m"},
        "kafka": {"partitions": 3},
        "log": {"level": "info", "format": "json"},
    }
    for k, v in overrides.items():
        base[k] = base.get(k, {}) | v if isinstance(v, dict) else v
    return load_settings(None, **base)


@contextlib.contextmanager
def private_stack(settings: Settings) -> Iterator[Settings]:
    """Start the stack of ``settings`` and always stop it again."""
    try:
        stack.up(settings)
        yield settings
    finally:
        stack.down(settings)


def kill_kafka(settings: Settings) -> int:
    """SIGKILL the private broker's JVM (from its pid file) and wait until it is gone; returns its pid."""
    pid_file = settings.data_dir / "stack" / "kafka" / "kafka.pid"
    pid = int(pid_file.read_text().strip())
    os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # started by this process: reap it so the pid file reads as dead
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stack.port_open(settings.stack.kafka_port):
        time.sleep(0.1)
    return pid


def read_all(settings: Settings, topic: str, timeout_s: float = 15.0) -> list[tuple[str, bytes]]:
    """Every (key, value) on ``topic`` from the beginning up to its current end offsets."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             group_id=None, request_timeout_ms=20000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(p) < ends[p] for p in parts):
            for recs in consumer.poll(timeout_ms=300).values():
                out.extend((r.key.decode(), r.value) for r in recs)
        return out
    finally:
        consumer.close()


def matched_ids(settings: Settings) -> dict[str, set[str]]:
    """Article ids per topic id over the whole matches topic."""
    out: dict[str, set[str]] = {}
    for _, value in read_all(settings, settings.kafka.topics.matches):
        m = decode(Match, value)
        out.setdefault(m.topic_id, set()).add(m.article.id)
    return out


def problems(log: Path) -> dict[str, int]:
    """Warning and error events of a worker's JSON log, counted by event name."""
    out: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if line.startswith("{") and ('"level": "warning"' in line or '"level": "error"' in line):
            try:
                name = str(json.loads(line).get("event"))
            except ValueError:
                continue
            out[name] = out.get(name, 0) + 1
    return out


def settled(log: Path) -> bool:
    """True when the worker's latest group event is a non-empty assignment (not a rebalance left hanging)."""
    last = b""
    for line in log.read_bytes().splitlines() if log.exists() else []:
        if b'"partitions_assigned"' in line or b'"partitions_revoked"' in line:
            last = line
    return b'"partitions_assigned"' in last and b'"partitions": []' not in last
