"""Concurrent writers lose no edit and never share a version; ETag / If-Match on the API (issue 12, item 3).

Against the real Redis. The concurrent tests widen the read-to-write window on purpose: the API's Redis
client pauses 20 ms after every command on the topics registry, so writers that read, change and write
back overlap every time instead of once in a while.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import api_support
import httpx
import pytest
import redis
from api_support import Api, match
from fastapi.testclient import TestClient

from wirewatch import registry, state
from wirewatch.api import create_app
from wirewatch.auth import KeyStore
from wirewatch.records import ChannelKind, ChannelSpec, Subscription, Topic
from wirewatch.settings import Settings
from wirewatch.web.matches import MatchStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
api, api_settings = api_support.api, api_support.api_settings
WRITERS = 8


class SlowRegistry(redis.Redis):
    """A client that pauses after each command on one key: a slow network or a busy server, made certain."""

    watched = ""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().execute_command(*args, **options)
        if self.watched in args:
            time.sleep(0.02)
        return result


@pytest.fixture
def slow_api(api_settings: Settings) -> Iterator[Api]:
    client = SlowRegistry.from_url(api_settings.redis_url)
    client.watched = state.key(api_settings, "reg", "topics")
    keys = KeyStore(state.connect(api_settings), api_settings)
    _, admin = keys.create("ops", "admin")
    alice_key, alice = keys.create("alice desk", "subscriber")
    bob_key, bob = keys.create("bob desk", "subscriber")
    a = Api(api_settings, create_app(api_settings, client=client, follow_matches=False), admin, alice, bob,
            alice_key.id, bob_key.id)
    with TestClient(a.app) as tc:
        a.client = tc
        yield a


def _topics(a: Api) -> registry.Registry[Topic]:
    return registry.topics(state.connect(a.settings), a.settings)


def _together(n: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    start = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        start.wait(10)
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_feedback_keeps_every_judgement_and_gives_each_its_own_version(slow_api: Api) -> None:
    assert slow_api.client is not None
    _topics(slow_api).put(Topic(id="quakes", name="Earthquakes", description="earthquakes and aftershocks"))
    matches = [match("quakes", f"Quake number {i} hits the coast") for i in range(WRITERS)]
    store: MatchStore = slow_api.app.state.ww.extras["match_store"]
    store.add(matches)
    c, admin = slow_api.client, slow_api.h(slow_api.admin)
    answers = _together(WRITERS, lambda i: c.post("/v1/feedback", headers=admin, json={
        "topic_id": "quakes", "article_id": matches[i].article.id, "verdict": "relevant"}))
    assert [r.status_code for r in answers] == [200] * WRITERS, [r.text for r in answers]
    versions = sorted(r.json()["topic_version"] for r in answers)
    topic = _topics(slow_api).get("quakes")
    assert topic is not None
    lost = [m.article.title for m in matches if not any(e.startswith(m.article.title) for e in topic.examples)]
    assert lost == [], f"{len(lost)} of {WRITERS} judgements lost"
    assert versions == list(range(2, 2 + WRITERS)), f"versions shared: {versions}"
    assert topic.version == 1 + WRITERS


def test_concurrent_topic_replacements_never_share_a_version(slow_api: Api) -> None:
    assert slow_api.client is not None
    _topics(slow_api).put(Topic(id="quakes", name="Earthquakes"))
    c, admin = slow_api.client, slow_api.h(slow_api.admin)
    answers = _together(WRITERS, lambda i: c.put("/v1/topics/quakes", headers=admin, json={
        "id": "quakes", "name": "Earthquakes", "description": f"edit {i}"}))
    assert [r.status_code for r in answers] == [200] * WRITERS, [r.text for r in answers]
    versions = sorted(r.json()["version"] for r in answers)
    assert versions == list(range(2, 2 + WRITERS)), f"versions shared: {versions}"
    topic = _topics(slow_api).get("quakes")
    assert topic is not None and topic.version == 1 + WRITERS
    last = next(r.json() for r in answers if r.json()["version"] == topic.version)
    assert topic.description == last["description"], "the stored topic is the one answered with the top version"


def test_concurrent_registry_updates_lose_nothing(api_settings: Settings) -> None:
    reg = registry.topics(state.connect(api_settings), api_settings)
    reg.put(Topic(id="quakes", name="Earthquakes"))
    results: list[tuple[Topic, int]] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        for i in range(10):
            done = reg.update("quakes", lambda t, i=i: t.model_copy(update={
                "examples": (*t.examples, f"w{w}-{i}"), "version": t.version + 1}))
            assert done is not None
            with lock:
                results.append(done)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = reg.get_versioned("quakes")
    assert final is not None
    topic, etag = final
    assert len(topic.examples) == WRITERS * 10 == len(set(topic.examples)), "an edit was lost"
    assert sorted(t.version for t, _ in results) == list(range(2, 2 + WRITERS * 10)), "two edits share a version"
    assert etag == 1 + WRITERS * 10 and sorted(v for _, v in results) == list(range(2, 2 + WRITERS * 10))


def test_a_stale_or_foreign_version_is_refused_and_a_deleted_record_is_not_revived(api_settings: Settings) -> None:
    reg = registry.topics(state.connect(api_settings), api_settings)
    reg.put(Topic(id="quakes", name="Earthquakes"))
    got = reg.get_versioned("quakes")
    assert got is not None and got[1] == 1
    assert reg.put_if_version(got[0].model_copy(update={"name": "first"}), 1) == 2
    with pytest.raises(registry.Conflict, match="at version 2, not 1"):
        reg.put_if_version(got[0].model_copy(update={"name": "stale"}), 1)
    assert reg.get("quakes").name == "first"  # type: ignore[union-attr]
    assert reg.delete("quakes")
    with pytest.raises(registry.Conflict, match="gone"):
        reg.put_if_version(got[0], 2)
    assert reg.get("quakes") is None and reg.update("quakes", lambda t: t) is None
    assert reg.put_if_absent(Topic(id="quakes", name="again"))
    assert reg.get_versioned("quakes")[1] == 3  # type: ignore[index]  # never an old version again


def _etag_round(c: TestClient, h: dict[str, str], path: str, write: Callable[..., httpx.Response],
                body: dict[str, Any], other: dict[str, Any]) -> None:
    r = c.get(path, headers=h)
    assert r.status_code == 200 and r.headers["ETag"] == '"1"', r.headers
    first = r.headers["ETag"]
    r = write(path, json=body, headers=h | {"If-Match": first})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"2"' and c.get(path, headers=h).headers["ETag"] == '"2"'
    stale = write(path, json=other, headers=h | {"If-Match": first})
    assert stale.status_code == 412 and "version 2, not 1" in stale.json()["detail"], stale.text
    assert c.get(path, headers=h).headers["ETag"] == '"2"', "a refused write changed nothing"
    assert write(path, json=other, headers=h | {"If-Match": 'W/"2"'}).status_code == 412
    assert write(path, json=other, headers=h | {"If-Match": "*"}).status_code == 200
    r = write(path, json=body, headers=h)  # no If-Match: still a plain write
    assert r.status_code == 200 and r.headers["ETag"] == '"4"'


def test_reads_carry_an_etag_and_a_stale_if_match_gets_412(api: Api) -> None:
    assert api.client is not None
    c, alice = api.client, api.h(api.alice)
    assert c.post("/v1/topics", json={"id": "syria", "name": "Syria"}, headers=alice).status_code == 201
    _etag_round(c, alice, "/v1/topics/syria", c.put, {"id": "syria", "name": "Syria", "description": "war"},
                {"id": "syria", "name": "Syria", "description": "peace"})
    sub = Subscription(id="desk", topic_id="syria", owner=api.alice_id,
                       channel=ChannelSpec(type=ChannelKind.WEBHOOK, target="http://127.0.0.1:9/hook"))
    registry.subscriptions(state.connect(api.settings), api.settings).put(sub)
    _etag_round(c, alice, "/v1/subscriptions/desk", c.patch, {"min_score": 0.5}, {"min_score": 0.7})
    r = c.post("/v1/feeds", json={"url": "http://127.0.0.1:9/feed.xml"}, headers=alice)
    assert r.status_code == 201, r.text
    _etag_round(c, alice, f"/v1/feeds/{r.json()['id']}", c.patch, {"name": "Wire"}, {"name": "Other"})
    assert c.patch("/v1/subscriptions/desk", json={"min_score": 0.1}, headers=api.h(api.bob) | {"If-Match": '"4"'}
                   ).status_code == 404, "a stranger learns nothing, ETag or not"
