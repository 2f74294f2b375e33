"""Real receivers on 127.0.0.1 for the alerts tests, and small builders of matches and subscriptions."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alerts.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from wirewatch.bus import Outgoing, Producer
from wirewatch.records import Article, ChannelKind, ChannelSpec, Match, ModelInfo, Subscription, encode

Behaviour = Callable[["Receiver", dict[str, Any]], tuple[int, dict[str, str]]]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 drops connections under a burst of sends


class Receiver:
    """A threaded HTTP receiver that records every request; ``behaviour`` picks each answer."""

    def __init__(self, secret: str | None = None, behaviour: Behaviour | None = None) -> None:
        self.secret = secret
        self.behaviour = behaviour
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    parsed = json.loads(body)
                except ValueError:  # a sender killed mid-request: the body never came
                    self.send_response(400)
                    self.end_headers()
                    return
                req = {"path": self.path, "headers": dict(self.headers.items()), "body": body,
                       "json": parsed, "at": time.monotonic()}
                status, headers = receiver.answer(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # a hanging handler must not hold the test at teardown
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign]  # a killed sender's broken pipe
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def answer(self, req: dict[str, Any]) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append(req)
        if self.secret is not None:
            h = req["headers"]
            if not verify(self.secret, h.get(TIMESTAMP_HEADER, ""), req["body"], h.get(SIGNATURE_HEADER, "")):
                with self.lock:
                    self.bad_signatures += 1
                return 401, {}
        status, headers = self.behaviour(self, req) if self.behaviour else (200, {})
        if 200 <= status < 300:
            with self.lock:
                self.accepted.append(req)
        return status, headers

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(r["headers"].get("Idempotency-Key", "") for r in self.accepted)

    def wait_for(self, n: int, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.accepted) >= n:
                    return True
            time.sleep(0.02)
        return False

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def article(aid: str, title: str, summary: str = "", source: str = "Example News") -> Article:
    now = datetime.now(UTC)
    return Article(id=aid, url=f"https://news.example/{aid}", title=title, summary=summary, published_at=now,
                   fetched_at=now, feed_url="https://news.example/feed", source=source)


def match(aid: str, title: str, summary: str = "", *, topic: str = "syria", source: str = "Example News",
          score: float = 0.9, vector: tuple[float, ...] | None = None) -> Match:
    return Match(article=article(aid, title, summary, source), topic_id=topic, score=score, threshold=0.5,
                 model=ModelInfo(name="test"), vector=vector)


def webhook_sub(sid: str, url: str, *, topic: str = "syria", secret: str | None = "s3cret",
                **fields: Any) -> Subscription:
    return Subscription(id=sid, topic_id=topic, channel=ChannelSpec(type=ChannelKind.WEBHOOK, target=url,
                                                                    secret=secret), **fields)


def produce(settings: Any, matches: list[Match]) -> None:
    p = Producer(settings, client_id="test")
    try:
        p.send_many([Outgoing(settings.kafka.topics.matches, m.article.id, encode(m)) for m in matches])
    finally:
        p.close()


@contextmanager
def running(worker: Any) -> Iterator[Any]:
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        yield worker
    finally:
        worker.stop()
        t.join(60)


def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def read_deliveries(settings: Any, min_count: int, timeout_s: float = 20.0) -> list[Any]:
    """Every Delivery on the test's deliveries topic: waits for at least ``min_count``, then reads to its end.

    Reads each partition from its start with an explicitly assigned consumer (no group, no rebalance). A
    client that has read nothing for a while is replaced by a fresh one that starts over (records already
    read are counted once, by partition and offset), so one stuck connection cannot stall the read.
    """
    from kafka import KafkaConsumer, TopicPartition

    from wirewatch.records import Delivery, decode

    topic = settings.kafka.topics.deliveries
    seen: dict[tuple[int, int], Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(seen) < min_count:
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                 auto_offset_reset="earliest")
        try:
            parts = None
            while not parts and time.monotonic() < deadline:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    time.sleep(0.2)
            if not parts:
                break
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            quiet_until = time.monotonic() + 5.0
            while time.monotonic() < min(deadline, quiet_until):
                got = consumer.poll(timeout_ms=500)
                for batch in got.values():
                    for r in batch:
                        seen[(r.partition, r.offset)] = decode(Delivery, r.value)
                if got:
                    quiet_until = time.monotonic() + 5.0
                if len(seen) >= min_count:
                    # then everything the topic holds now, and one more short poll for a late extra record
                    ends = consumer.end_offsets(tps)
                    until = time.monotonic() + 10.0
                    while time.monotonic() < until and any(consumer.position(tp) < ends[tp] for tp in tps):
                        for batch in consumer.poll(timeout_ms=300).values():
                            for r in batch:
                                seen[(r.partition, r.offset)] = decode(Delivery, r.value)
                    for batch in consumer.poll(timeout_ms=300).values():
                        for r in batch:
                            seen[(r.partition, r.offset)] = decode(Delivery, r.value)
                    break
        finally:
            consumer.close()
    return [seen[k] for k in sorted(seen)]


class Hang:
    """A receiver behaviour that holds every request until ``release`` is set, counting how many it holds."""

    def __init__(self, wait_s: float = 10.0) -> None:
        self.release = threading.Event()
        self.now = self.max = 0
        self._lock = threading.Lock()
        self._wait_s = wait_s

    def __call__(self, rx: Receiver, req: dict[str, Any]) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)
        self.release.wait(self._wait_s)
        with self._lock:
            self.now -= 1
        return 200, {}
