"""Authorization matrix: every route x (no key / wrong key / a subscriber / the right key).

The route list is read from the assembled app, so stage routers are covered as they land: a route that
answers without a key fails here. Ownership (another subscriber's key) is checked on the records a
subscriber owns: subscriptions (and topics and feeds where the stage routers store an owner).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import api_support
import pytest
from api_support import Api
from fastapi.routing import APIRoute

pytestmark = pytest.mark.integration
api, api_settings = api_support.api, api_support.api_settings

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/ui/login"), ("POST", "/ui/login"),
          ("GET", "/"), ("POST", "/ui/logout")}
ADMIN_ONLY = {("GET", "/metrics"), ("POST", "/v1/feeds/import")}


def _routes(app: Any) -> list[tuple[str, str]]:
    """Every documented operation plus the dashboard's pages (which are left out of the schema)."""
    from wirewatch.web import pages

    out = []
    for path, ops in app.openapi()["paths"].items():
        out += [(m.upper(), path) for m in ops if m in ("get", "post", "put", "patch", "delete")]
    for route in pages.router().routes:
        assert isinstance(route, APIRoute)
        out += [(m, route.path) for m in route.methods - {"HEAD"}]
    return [r for r in out if r not in PUBLIC]


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-probe", path)


def _call(api: Api, method: str, path: str, headers: dict[str, str]) -> Any:
    assert api.client is not None
    kwargs: dict[str, Any] = {"headers": headers, "follow_redirects": False}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    if path == "/v1/stream" and headers.get("X-API-Key") in (api.admin, api.alice):
        return None  # an authorized stream never ends; its authorized behaviour is tested in test_api_core
    return api.client.request(method, _fill(path), **kwargs)


def test_every_route_but_health_needs_a_key(api: Api) -> None:
    routes = _routes(api.app)
    assert ("GET", "/v1/matches") in routes and ("POST", "/v1/feedback") in routes
    wrong = {"X-API-Key": "ww_000000000000_" + "a" * 43}
    problems = []
    for method, path in routes:
        for label, headers in (("no key", {}), ("wrong key", wrong), ("bad bearer", {"Authorization": "Bearer x"})):
            r = _call(api, method, path, headers)
            expected = (303,) if path.startswith("/ui") else (401,)
            if r is not None and r.status_code not in expected:
                problems.append(f"{method} {path} with {label}: {r.status_code}")
    assert problems == []


def test_schema_and_docs_need_a_key(api: Api) -> None:
    assert api.client is not None
    for path in ("/openapi.json", "/docs"):
        assert api.client.get(path).status_code == 401, path
        assert api.client.get(path, headers=api.h(api.alice)).status_code == 200, path
    assert "/v1/matches" in api.client.get("/openapi.json", headers=api.h(api.alice)).json()["paths"]
    assert api.client.get("/redoc", headers=api.h(api.alice)).status_code == 404


def test_admin_only_routes_refuse_subscribers_with_403(api: Api) -> None:
    routes = set(_routes(api.app))
    for method, path in sorted(ADMIN_ONLY & routes):
        r = _call(api, method, path, api.h(api.alice))
        assert r.status_code == 403, f"{method} {path}"
        assert _call(api, method, path, api.h(api.admin)).status_code not in (401, 403)


def _owned(api: Api, kind: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Create one record of ``kind`` as alice; returns its URL, a replacement body and a patch."""
    assert api.client is not None
    if kind == "topics":
        body = {"id": "alice-topic", "name": "Alice's topic", "description": "harbour strikes"}
        r = api.client.post("/v1/topics", json=body, headers=api.h(api.alice))
        assert r.status_code == 201, r.text
        return "/v1/topics/alice-topic", body | {"description": "dock strikes"}, {}
    if kind == "feeds":
        r = api.client.post("/v1/feeds", json={"url": "https://news.example.com/alice.xml"}, headers=api.h(api.alice))
        assert r.status_code == 201, r.text
        return f"/v1/feeds/{r.json()['id']}", {}, {"name": "renamed"}
    raise AssertionError(kind)


KINDS = [k for k, module in (("topics", "classify.api"), ("feeds", "ingest.api"))
         if importlib.util.find_spec(module) is not None]


@pytest.mark.parametrize("kind", KINDS)
def test_other_subscriber_cannot_change_what_one_owns(api: Api, kind: str) -> None:
    """Shared definitions: bob may read alice's record but changing or deleting it answers 404."""
    assert api.client is not None
    url, replacement, patch = _owned(api, kind)
    assert api.client.get(url, headers=api.h(api.bob)).status_code == 200, "shared definitions are readable"
    if replacement:
        assert api.client.put(url, json=replacement, headers=api.h(api.bob)).status_code == 404
        assert api.client.put(url, json=replacement, headers=api.h(api.alice)).status_code == 200
    if patch:
        assert api.client.patch(url, json=patch, headers=api.h(api.bob)).status_code == 404
        assert api.client.patch(url, json=patch, headers=api.h(api.alice)).status_code == 200
    assert api.client.delete(url, headers=api.h(api.bob)).status_code == 404
    assert api.client.get(url, headers=api.h(api.bob)).status_code == 200, "still there"
    assert api.client.delete(url, headers=api.h(api.admin)).status_code == 204, "admin may delete any"
    assert api.client.get(url, headers=api.h(api.alice)).status_code == 404


@pytest.mark.parametrize("kind", KINDS)
def test_caps_limit_what_a_key_may_create(api_settings: Any, kind: str) -> None:
    from fastapi.testclient import TestClient

    from wirewatch import state
    from wirewatch.api import create_app
    from wirewatch.auth import Caps, KeyStore

    _, secret = KeyStore(state.connect(api_settings), api_settings).create(
        "capped", "subscriber", Caps(topics=1, subscriptions=1, feeds=1))
    with TestClient(create_app(api_settings, follow_matches=False)) as client:
        for i in range(2):
            if kind == "topics":
                r = client.post("/v1/topics", json={"id": f"cap-{i}", "name": "n", "description": "d"},
                                headers={"X-API-Key": secret})
            else:
                r = client.post("/v1/feeds", json={"url": f"https://news.example.com/{i}.xml"},
                                headers={"X-API-Key": secret})
            assert r.status_code == (201 if i == 0 else 403), r.text
        assert "cap reached" in r.json()["detail"]


def test_right_key_is_never_refused_by_auth(api: Api) -> None:
    problems = []
    for method, path in _routes(api.app):
        if path.startswith("/ui") or (method, path) in ADMIN_ONLY:
            continue
        for who, secret in (("admin", api.admin), ("subscriber", api.alice)):
            r = _call(api, method, path, api.h(secret))
            if r is None:
                continue
            if r.status_code in (401, 429) or (who == "admin" and r.status_code == 403):
                problems.append(f"{method} {path} as {who}: {r.status_code} {r.text[:120]}")
            if r.status_code >= 500:
                problems.append(f"{method} {path} as {who}: {r.status_code}")
    assert problems == []


def test_dashboard_cookie_writes_need_the_csrf_header(api: Api) -> None:
    assert api.client is not None
    api.client.cookies.set("ww_key", api.admin)
    try:
        body = {"topic_id": "t", "article_id": "a", "verdict": "relevant"}
        r = api.client.post("/v1/feedback", json=body)
        assert r.status_code == 403 and "x-wirewatch-csrf" in r.json()["detail"]
        r = api.client.post("/v1/feedback", json=body, headers={"X-Wirewatch-CSRF": "1"})
        assert r.status_code == 404, "authenticated; the match is simply unknown"
        assert api.client.get("/v1/me").status_code == 200, "reads need no CSRF header"
    finally:
        api.client.cookies.clear()


def test_dashboard_pages_need_a_signed_in_key(api: Api) -> None:
    assert api.client is not None
    r = api.client.get("/ui/topics", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    bad = api.client.post("/ui/login", data={"api_key": "ww_nope_" + "a" * 30}, follow_redirects=False)
    assert bad.status_code == 401
    good = api.client.post("/ui/login", data={"api_key": api.alice}, follow_redirects=False)
    assert good.status_code == 303
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = api.client.get("/ui/topics")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    api.client.cookies.clear()


def test_subscriptions_are_private_to_their_owner(api: Api) -> None:
    """Another subscriber's key gets 404 on every route of alice's subscription and never sees it listed."""
    assert api.client is not None
    if importlib.util.find_spec("alerts.api") is None:
        pytest.fail("alerts.api is not installed")
    api.client.post("/v1/topics", json={"id": "strikes", "name": "Strikes", "description": "dock strikes"},
                    headers=api.h(api.admin))
    body = {"id": "alice-sub", "topic_id": "strikes",
            "channel": {"type": "webhook", "target": "https://hooks.example.com/alice", "secret": "s3cret"}}
    r = api.client.post("/v1/subscriptions", json=body, headers=api.h(api.alice))
    assert r.status_code == 201, r.text
    assert r.json()["channel"]["secret"] == "***"
    url = "/v1/subscriptions/alice-sub"
    assert api.client.get(url, headers=api.h(api.bob)).status_code == 404
    assert api.client.patch(url, json={"min_score": 0.9}, headers=api.h(api.bob)).status_code == 404
    assert api.client.post(url + "/test", headers=api.h(api.bob)).status_code == 404
    assert api.client.delete(url, headers=api.h(api.bob)).status_code == 404
    assert [s["id"] for s in api.client.get("/v1/subscriptions", headers=api.h(api.bob)).json()] == []
    assert [s["id"] for s in api.client.get("/v1/subscriptions", headers=api.h(api.alice)).json()] == ["alice-sub"]
    assert "alice-sub" in [s["id"] for s in api.client.get("/v1/subscriptions", headers=api.h(api.admin)).json()]
    assert api.client.get("/v1/deliveries", params={"subscription": "alice-sub"},
                          headers=api.h(api.bob)).json() == []
    assert api.client.patch(url, json={"min_score": 0.9}, headers=api.h(api.alice)).status_code == 200
    assert api.client.delete(url, headers=api.h(api.alice)).status_code == 204
    assert api.client.get(url, headers=api.h(api.admin)).status_code == 404


@pytest.mark.parametrize(
    ("target", "why"),
    [("http://169.254.169.254/latest", "metadata"), ("http://user:pw@hooks.example.com/", "credentials"),
     ("ftp://hooks.example.com/", "http and https"), ("http://[::ffff:10.0.0.1]/", "private")],
)
def test_webhook_targets_into_the_private_network_get_422(api: Api, target: str, why: str) -> None:
    assert api.client is not None
    api.client.post("/v1/topics", json={"id": "strikes", "name": "Strikes", "description": "d"},
                    headers=api.h(api.admin))
    body = {"topic_id": "strikes", "channel": {"type": "webhook", "target": target}}
    r = api.client.post("/v1/subscriptions", json=body, headers=api.h(api.alice))
    assert r.status_code == 422 and "channel.target" in r.json()["detail"] and why in r.json()["detail"]
