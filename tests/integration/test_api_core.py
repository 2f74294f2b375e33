"""The API's own routes against the real Redis and Kafka: keys, health, matches, stream, feedback, limits."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import api_support
import httpx
import pytest
from api_support import Api, match, produce_matches, wait_for
from typer.testing import CliRunner

from wirewatch import registry, state
from wirewatch.auth import Caps, KeyStore, check_cap, hash_secret
from wirewatch.records import Topic
from wirewatch.settings import Settings
from wirewatch.web.matches import MatchStore

pytestmark = pytest.mark.integration
api, api_settings, live_api = api_support.api, api_support.api_settings, api_support.live_api


def test_healthz_answers_without_a_key(api: Api) -> None:
    assert api.client is not None
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_readyz_reports_redis_and_kafka_reachable(api: Api) -> None:
    assert api.client is not None
    r = api.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"redis": "ok", "kafka": "ok"}


def test_readyz_is_503_when_kafka_is_unreachable(api_settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from wirewatch import stack
    from wirewatch.api import create_app

    dead = api_settings.model_copy(update={"kafka": api_settings.kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{stack.free_port()}"})})
    with TestClient(create_app(dead, follow_matches=False)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["kafka"] == "unreachable"


def test_keys_are_stored_only_as_hashes(api: Api) -> None:
    raw = state.connect(api.settings).hgetall(state.key(api.settings, "api", "keys"))
    blob = b"".join(raw.values()).decode()
    assert api.admin not in blob and api.alice not in blob
    assert hash_secret(api.alice) in blob


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "ww_nothere_aaaaaaaaaaaaaaaaaaaaaaaa"}, 401),
        ({"X-API-Key": "not-even-the-format"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ],
)
def test_missing_or_wrong_key_gets_401(api: Api, headers: dict[str, str], status: int) -> None:
    assert api.client is not None
    r = api.client.get("/v1/matches", headers=headers)
    assert r.status_code == status
    assert "WWW-Authenticate" in r.headers


def test_wrong_secret_for_a_real_key_id_gets_401(api: Api) -> None:
    assert api.client is not None
    forged = "_".join(api.alice.split("_", 2)[:2]) + "_" + "x" * 43
    assert api.client.get("/v1/matches", headers=api.h(forged)).status_code == 401


def test_key_guessing_is_slowed_with_429(api_settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from wirewatch.api import create_app

    s = api_settings.model_copy(update={"api": api_settings.api.model_copy(update={"auth_failures_per_minute": 5})})
    _, good = KeyStore(state.connect(s), s).create("good", "subscriber")
    with TestClient(create_app(s, follow_matches=False)) as client:
        codes = [client.get("/v1/me", headers={"X-API-Key": f"ww_guess{i}_{'a' * 30}"}).status_code
                 for i in range(6)]
        assert codes == [401] * 5 + [429]
        assert client.get("/v1/me", headers={"X-API-Key": good}).status_code == 200, "a right key still works"


def test_bearer_header_is_accepted(api: Api) -> None:
    assert api.client is not None
    r = api.client.get("/v1/me", headers={"Authorization": f"Bearer {api.alice}"})
    assert r.status_code == 200
    assert r.json()["key"]["id"] == api.alice_id and r.json()["key"]["scope"] == "subscriber"


def test_revoked_key_gets_401_on_the_next_request(api: Api) -> None:
    assert api.client is not None
    assert api.client.get("/v1/me", headers=api.h(api.bob)).status_code == 200
    assert KeyStore(state.connect(api.settings), api.settings).revoke(api.bob_id)
    assert api.client.get("/v1/me", headers=api.h(api.bob)).status_code == 401


def test_metrics_needs_admin_scope(api: Api) -> None:
    assert api.client is not None
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers=api.h(api.alice)).status_code == 403
    r = api.client.get("/metrics", headers=api.h(api.admin))
    assert r.status_code == 200 and "wirewatch_api_requests_total" in r.text


def test_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    assert api.client is not None
    store = KeyStore(state.connect(api.settings), api.settings)
    _, secret = store.create("tight", "subscriber", rate_limit_per_minute=3)
    codes = [api.client.get("/v1/me", headers=api.h(secret)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = api.client.get("/v1/me", headers=api.h(secret))
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert api.client.get("/v1/me", headers=api.h(api.alice)).status_code == 200, "limits are per key"


def test_check_cap_refuses_past_the_cap() -> None:
    from fastapi import HTTPException

    from wirewatch.auth import ApiKey

    k = ApiKey(id="k1", name="n", scope="subscriber", created_at=datetime.now(UTC), caps=Caps(topics=2))
    check_cap(k, "topics", 1)
    with pytest.raises(HTTPException) as err:
        check_cap(k, "topics", 2)
    assert err.value.status_code == 403 and "at most 2 topics" in str(err.value.detail)


def test_body_over_the_limit_gets_413(api: Api) -> None:
    assert api.client is not None
    big = b'{"topic_id": "t", "article_id": "' + b"x" * (api.settings.api.max_body_bytes + 10) + b'"}'
    r = api.client.post("/v1/feedback", content=big, headers=api.h(api.admin) | {"Content-Type": "application/json"})
    assert r.status_code == 413 and "body" in r.json()["detail"]


def test_chunked_body_over_the_limit_gets_413(api: Api) -> None:
    assert api.client is not None

    def chunks() -> Any:
        for _ in range(api.settings.api.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    r = api.client.post("/v1/feedback", content=chunks(), headers=api.h(api.admin))
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"article_id": "a", "verdict": "relevant"}, "body.topic_id"),
        ({"topic_id": "t", "article_id": "a", "verdict": "meh"}, "body.verdict"),
        ({"topic_id": "Bad Id!", "article_id": "a", "verdict": "relevant"}, "body.topic_id"),
        ({"topic_id": "t", "article_id": "", "verdict": "relevant"}, "body.article_id"),
        ({"topic_id": "t", "article_id": "a", "verdict": "relevant", "surprise": 1}, "body.surprise"),
    ],
)
def test_bad_feedback_payload_gets_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    assert api.client is not None
    r = api.client.post("/v1/feedback", json=body, headers=api.h(api.admin))
    assert r.status_code == 422
    assert field in r.json()["detail"]
    assert any(e["field"] == field for e in r.json()["errors"])


def test_not_json_gets_422(api: Api) -> None:
    assert api.client is not None
    headers = api.h(api.admin) | {"Content-Type": "application/json"}
    r = api.client.post("/v1/feedback", content=b"{not json", headers=headers)
    assert r.status_code == 422


def _store(api: Api) -> MatchStore:
    store: MatchStore = api.app.state.ww.extras["match_store"]
    return store


def test_matches_listing_filters_by_topic_and_time_with_cursor_pages(api: Api) -> None:
    assert api.client is not None
    ms = [match("quakes", f"Quake {i}", minutes_ago=i) for i in range(25)]
    ms += [match("ceasefire", f"Truce {i}", minutes_ago=i + 0.5) for i in range(5)]
    assert all(_store(api).add(ms))
    assert not any(_store(api).add(ms[:3])), "a match is stored once"
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"topic": "quakes", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        r = api.client.get("/v1/matches", params=params, headers=api.h(api.alice))
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [m["article"]["title"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Quake {i}" for i in range(25)], "newest first, every item once, across pages"
    since = (datetime.now(UTC) - timedelta(minutes=3, seconds=10)).isoformat()
    r = api.client.get("/v1/matches", params={"since": since}, headers=api.h(api.alice))
    titles = {m["article"]["title"] for m in r.json()["items"]}
    assert titles == {"Quake 0", "Quake 1", "Quake 2", "Quake 3", "Truce 0", "Truce 1", "Truce 2"}
    assert all("vector" not in m or m["vector"] is None for m in r.json()["items"])


def test_bad_cursor_gets_422_naming_cursor(api: Api) -> None:
    assert api.client is not None
    r = api.client.get("/v1/matches", params={"cursor": "garbage!"}, headers=api.h(api.alice))
    assert r.status_code == 422 and "cursor" in r.json()["detail"]


def test_store_is_bounded(api_settings: Settings) -> None:
    s = api_settings.model_copy(update={"api": api_settings.api.model_copy(update={"recent_matches": 100})})
    store = MatchStore(state.connect(s), s)
    store.add([match("t1", f"n{i}", minutes_ago=200 - i) for i in range(130)])
    page, _ = store.page(limit=500)
    assert len(page) == 100
    assert page[-1].article.title == "n30", "the oldest are dropped first"
    assert store.get("t1", page[0].article.id) is not None


def test_match_counts_per_topic(api: Api) -> None:
    assert api.client is not None
    _store(api).add([match("quakes", f"q{i}") for i in range(3)] + [match("floods", "f0")])
    r = api.client.get("/v1/matches/counts", params={"hours": 1}, headers=api.h(api.alice))
    assert r.status_code == 200
    totals = {t["topic_id"]: sum(n for _, n in t["buckets"]) for t in r.json()["topics"]}
    assert totals == {"quakes": 3, "floods": 1}


def _topic(api: Api, owner: str | None) -> Topic:
    t = Topic(id="quakes", name="Earthquakes", description="earthquakes and aftershocks", owner=owner)
    return registry.topics(state.connect(api.settings), api.settings).put(t)


def test_feedback_adds_examples_as_a_new_topic_version(api: Api) -> None:
    assert api.client is not None
    _topic(api, owner=api.alice_id)
    m = match("quakes", "Strong quake hits coast")
    _store(api).add([m])
    body = {"topic_id": "quakes", "article_id": m.article.id, "verdict": "relevant"}
    r = api.client.post("/v1/feedback", json=body, headers=api.h(api.alice))
    assert r.status_code == 200, r.text
    assert r.json() == {"topic_id": "quakes", "topic_version": 2, "changed": True, "verdict": "relevant"}
    again = api.client.post("/v1/feedback", json=body, headers=api.h(api.alice))
    assert again.json()["changed"] is False and again.json()["topic_version"] == 2
    t = registry.topics(state.connect(api.settings), api.settings).get("quakes")
    assert t is not None and t.version == 2 and t.examples[0].startswith("Strong quake hits coast")
    body["verdict"] = "not_relevant"
    r = api.client.post("/v1/feedback", json=body, headers=api.h(api.alice))
    t = registry.topics(state.connect(api.settings), api.settings).get("quakes")
    assert t is not None and t.version == 3 and t.examples == () and len(t.counter_examples) == 1
    body["verdict"] = "duplicate"
    r = api.client.post("/v1/feedback", json=body, headers=api.h(api.alice))
    assert r.json()["changed"] is False


def test_feedback_from_a_stranger_gets_404(api: Api) -> None:
    assert api.client is not None
    _topic(api, owner=api.alice_id)
    m = match("quakes", "Quake")
    _store(api).add([m])
    body = {"topic_id": "quakes", "article_id": m.article.id, "verdict": "relevant"}
    assert api.client.post("/v1/feedback", json=body, headers=api.h(api.bob)).status_code == 404
    body["article_id"] = "unknown"
    assert api.client.post("/v1/feedback", json=body, headers=api.h(api.alice)).status_code == 404


def test_feedback_reaches_a_running_watcher_within_5_s(api: Api) -> None:
    assert api.client is not None
    _topic(api, owner=None)
    versions: list[int] = []
    watcher = registry.Watcher(registry.topics(state.connect(api.settings), api.settings),
                               lambda ts: versions.extend(t.version for t in ts), interval_s=0.5).start()
    try:
        m = match("quakes", "Quake")
        _store(api).add([m])
        started = time.monotonic()
        r = api.client.post("/v1/feedback", json={"topic_id": "quakes", "article_id": m.article.id,
                                                  "verdict": "relevant"}, headers=api.h(api.admin))
        assert r.status_code == 200
        wait_for(lambda: 2 in versions, 5.0, "the watcher to see version 2")
        assert time.monotonic() - started < 5
    finally:
        watcher.stop()


def test_live_stream_delivers_matches_of_followed_topics(live_api: Api) -> None:
    got: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", live_api.base_url + "/v1/stream", params={"topic": "quakes"},
                          headers=live_api.h(live_api.alice), timeout=20) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                ready.set()
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if len(got) == 2:
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10)
    hub = live_api.app.state.ww.extras["hub"]
    wait_for(lambda: hub.count() == 1, 5, "the stream client to register")
    started = time.monotonic()
    produce_matches(live_api.settings, [match("floods", "Flood"), match("quakes", "Quake A"),
                                        match("quakes", "Quake B")])
    t.join(15)
    assert sorted(g["article"]["title"] for g in got) == ["Quake A", "Quake B"], "only the followed topic"
    assert time.monotonic() - started < 10
    page = httpx.get(live_api.base_url + "/v1/matches", headers=live_api.h(live_api.alice)).json()
    assert {m["article"]["title"] for m in page["items"]} == {"Flood", "Quake A", "Quake B"}
    wait_for(lambda: hub.count() == 0, 5, "the closed client to be forgotten")


def test_stream_resumes_from_last_event_id(live_api: Api) -> None:
    """A reconnecting client gets what it missed since its Last-Event-ID, then live events, no repeats."""
    store = live_api.app.state.ww.extras["match_store"]
    old = [match("quakes", f"Missed {i}", minutes_ago=5 - i) for i in range(4)]
    store.add(old)
    got: list[str] = []
    with httpx.stream("GET", live_api.base_url + "/v1/stream", params={"topic": "quakes"},
                      headers=live_api.h(live_api.alice) | {"Last-Event-ID": f"quakes:{old[1].article.id}"},
                      timeout=20) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:])["article"]["title"])
                if len(got) == 2:
                    produce_matches(live_api.settings, [match("quakes", "Live one")])
                if len(got) == 3:
                    break
    assert got == ["Missed 2", "Missed 3", "Live one"]


def test_streams_per_key_are_capped_with_429(live_api: Api) -> None:
    hub = live_api.app.state.ww.extras["hub"]
    cap = live_api.settings.api.streams_per_key
    streams = []
    try:
        client = httpx.Client(base_url=live_api.base_url, timeout=10)
        for _ in range(cap):
            ctx = client.stream("GET", "/v1/stream", headers=live_api.h(live_api.bob))
            resp = ctx.__enter__()
            streams.append(ctx)
            assert resp.status_code == 200
        wait_for(lambda: hub.count() == cap, 10, "every stream to register")
        r = client.get("/v1/stream", headers=live_api.h(live_api.bob))
        assert r.status_code == 429 and r.headers["Retry-After"] == "30"
    finally:
        for ctx in streams:
            ctx.__exit__(None, None, None)
        client.close()


def test_stream_needs_a_key(live_api: Api) -> None:
    r = httpx.get(live_api.base_url + "/v1/stream", timeout=5)
    assert r.status_code == 401


def test_keys_cli_create_list_revoke(api_settings: Settings, tmp_path: Any) -> None:
    from wirewatch import cli

    conf = tmp_path / "ww.toml"
    conf.write_text(f'[redis]\nurl = "{api_settings.redis_url}"\nkey_prefix = "{api_settings.redis.key_prefix}"\n')
    runner = CliRunner()

    def app(args: list[str]) -> list[str]:
        return ["--config", str(conf), *args]

    r = runner.invoke(cli.app, app(["keys", "create", "night desk", "--scope", "subscriber", "--max-topics", "3"]),
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    secret = r.output.split("secret (shown once): ")[1].split()[0]
    store = KeyStore(state.connect(api_settings), api_settings)
    key = store.verify(secret)
    assert key is not None and key.caps.topics == 3 and key.name == "night desk"
    listing = runner.invoke(cli.app, app(["keys", "list"]), catch_exceptions=False)
    assert key.id in listing.output and secret not in listing.output
    assert runner.invoke(cli.app, app(["keys", "revoke", key.id])).exit_code == 0
    assert store.verify(secret) is None
    bad = runner.invoke(cli.app, app(["keys", "revoke", key.id]))
    assert bad.exit_code == 1
    wrong = runner.invoke(cli.app, app(["keys", "create", "x", "--scope", "root"]))
    assert wrong.exit_code == 2


def test_wirewatch_api_command_serves_until_terminated(api_settings: Settings, tmp_path: Any) -> None:
    import os
    import subprocess

    from wirewatch import stack
    from wirewatch.ops.roles import WIREWATCH

    port = stack.free_port()
    conf = tmp_path / "ww.toml"
    conf.write_text(f'[redis]\nurl = "{api_settings.redis_url}"\nkey_prefix = "{api_settings.redis.key_prefix}"\n'
                    f'[kafka]\nbootstrap_servers = "{api_settings.bootstrap_servers}"\n'
                    f'[api]\nport = {port}\n')
    proc = subprocess.Popen([*WIREWATCH, "--config", str(conf), "api"],
                            env=os.environ | {"HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "wirewatch api to answer /readyz")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/matches", timeout=5).status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status reports it.
    assert proc.returncode in (0, -15), out[-2000:]
    assert "Application shutdown complete" in out
