"""Fixtures and helpers shared by the API's integration, browser and schema tests.

``api`` is the app in-process (``TestClient``) on this test's Redis prefix and Kafka topics, with three keys:
an admin and two subscribers. ``live_api`` is the same app served by uvicorn on a free port, following the
matches topic, for streams and the browser.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from wirewatch import bus, stack, state
from wirewatch.api import create_app
from wirewatch.auth import KeyStore
from wirewatch.records import Article, Evidence, Match, ModelInfo
from wirewatch.settings import Settings


@dataclass
class Api:
    settings: Settings
    app: FastAPI
    admin: str
    alice: str
    bob: str
    alice_id: str
    bob_id: str
    client: TestClient | None = None
    base_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def h(self, secret: str | None) -> dict[str, str]:
        return {} if secret is None else {"X-API-Key": secret}


def make_api(settings: Settings, *, follow: bool) -> Api:
    store = KeyStore(state.connect(settings), settings)
    _, admin = store.create("ops", "admin")
    alice_key, alice = store.create("alice desk", "subscriber")
    bob_key, bob = store.create("bob desk", "subscriber")
    app = create_app(settings, follow_matches=follow)
    return Api(settings, app, admin, alice, bob, alice_key.id, bob_key.id)


@pytest.fixture
def api_settings(make_settings: Any) -> Settings:
    s: Settings = make_settings(api={"url_allowlist": ["127.0.0.1"], "sse_heartbeat_s": 0.5,
                                     "auth_failures_per_minute": 10000, "streams_per_key": 3})
    bus.ensure_default_topics(s)
    return s


@pytest.fixture
def api(api_settings: Settings) -> Iterator[Api]:
    a = make_api(api_settings, follow=False)
    with TestClient(a.app) as client:
        a.client = client
        yield a


@pytest.fixture
def live_api(api_settings: Settings) -> Iterator[Api]:
    a = make_api(api_settings, follow=True)
    port = stack.free_port()
    server = uvicorn.Server(uvicorn.Config(a.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    a.base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    follower = a.app.state.ww.extras["follower"]
    while time.monotonic() < deadline:
        try:
            if httpx.get(a.base_url + "/healthz", timeout=1).status_code == 200 and follower.assigned.is_set():
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        server.should_exit = True
        raise AssertionError("API server did not come up with its matches reader within 30 s")
    try:
        yield a
    finally:
        server.should_exit = True
        thread.join(10)


def article(title: str, *, source: str = "Example News", minutes_ago: float = 0) -> Article:
    now = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    url = f"https://news.example.com/{uuid.uuid4().hex[:10]}"
    return Article(id=uuid.uuid4().hex, url=url, title=title, summary=f"{title} summary.", published_at=now,
                   fetched_at=now, feed_url="https://news.example.com/rss", source=source)


def match(topic_id: str, title: str, *, score: float = 0.8, minutes_ago: float = 0) -> Match:
    a = article(title, minutes_ago=minutes_ago)
    return Match(article=a, topic_id=topic_id, score=score, threshold=0.5,
                 evidence=Evidence(closest=f"{topic_id} description", closest_kind="description", similarity=score),
                 model=ModelInfo(name="test-model"),
                 classified_at=datetime.now(UTC) - timedelta(minutes=minutes_ago))


def produce_matches(settings: Settings, matches: list[Match]) -> None:
    producer = bus.Producer(settings, client_id="test-api")
    try:
        producer.send_many([bus.Outgoing(settings.kafka.topics.matches, m.article.id, m.to_json()) for m in matches])
    finally:
        producer.close()


def wait_for(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
