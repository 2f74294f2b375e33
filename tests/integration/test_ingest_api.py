"""``/v1/feeds``: CRUD with ownership and SSRF checks, per-feed health, OPML import (admin) and export."""

from __future__ import annotations

import time

import api_support
from api_support import Api

from ingest.state import FeedState, StateStore
from wirewatch import state as wstate
from wirewatch.identity import feed_id

api, api_settings = api_support.api, api_support.api_settings


def test_create_list_get_patch_delete_with_ownership(api: Api) -> None:
    c = api.client
    assert c is not None
    r = c.post("/v1/feeds", json={"url": "https://news.example/rss", "name": "News", "tags": ["world"]},
               headers=api.h(api.alice))
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    assert fid == feed_id("https://news.example/rss") and r.json()["owner"] == api.alice_id
    again = c.post("/v1/feeds", json={"url": "https://news.example/rss"}, headers=api.h(api.bob))
    assert again.status_code == 409
    assert [f["id"] for f in c.get("/v1/feeds", headers=api.h(api.bob)).json()] == [fid]
    assert c.get(f"/v1/feeds/{fid}", headers=api.h(api.bob)).json()["name"] == "News"
    # Bob does not own it: 404, not 403, so ids do not leak.
    assert c.patch(f"/v1/feeds/{fid}", json={"name": "Mine"}, headers=api.h(api.bob)).status_code == 404
    r = c.patch(f"/v1/feeds/{fid}", json={"name": "Renamed", "interval_s": 600}, headers=api.h(api.alice))
    assert r.status_code == 200 and r.json()["name"] == "Renamed" and r.json()["interval_s"] == 600
    assert c.patch(f"/v1/feeds/{fid}", json={"bogus": 1}, headers=api.h(api.alice)).status_code == 422
    assert c.delete(f"/v1/feeds/{fid}", headers=api.h(api.bob)).status_code == 404
    assert c.delete(f"/v1/feeds/{fid}", headers=api.h(api.admin)).status_code == 204
    assert c.get(f"/v1/feeds/{fid}", headers=api.h(api.alice)).status_code == 404
    assert c.get("/v1/feeds").status_code == 401


def test_unsafe_urls_are_refused_with_422(api: Api) -> None:
    c = api.client
    assert c is not None
    for url in ("file:///etc/passwd", "http://169.254.169.254/latest/meta-data", "http://10.0.0.5/feed",
                "http://user:pw@news.example/rss", "gopher://news.example/"):
        r = c.post("/v1/feeds", json={"url": url}, headers=api.h(api.admin))
        assert r.status_code == 422, url
    # The test stack allows 127.0.0.1 explicitly (api.url_allowlist).
    assert c.post("/v1/feeds", json={"url": "http://127.0.0.1:9/f"}, headers=api.h(api.admin)).status_code == 201


def test_health_reports_state_and_quiet_flag(api: Api) -> None:
    c = api.client
    assert c is not None
    fid = c.post("/v1/feeds", json={"url": "https://quiet.example/rss"}, headers=api.h(api.admin)).json()["id"]
    assert c.get(f"/v1/feeds/{fid}/health", headers=api.h(api.bob)).json()["status"] == "pending"
    now = time.time()
    StateStore(wstate.connect(api.settings), api.settings).save(FeedState(
        feed_id=fid, url="https://quiet.example/rss", fetches=40, last_success_at=now - 60,
        last_new_at=now - 3 * 86400, rate_per_h=2.0, next_due=now + 300, items_new=120,
        last_error="5xx: HTTP 503", last_error_at=now - 7200))
    h = c.get(f"/v1/feeds/{fid}/health", headers=api.h(api.bob)).json()
    assert h["status"] == "quiet" and h["quiet"] is True and h["items_new"] == 120
    assert h["last_error"] == "5xx: HTTP 503" and h["next_due"] and h["rate_per_hour"] == 2.0
    assert [row["id"] for row in c.get("/v1/feeds/health", headers=api.h(api.bob)).json()] == [fid]
    assert c.get("/v1/feeds/nope/health", headers=api.h(api.bob)).status_code == 404


def test_opml_import_is_admin_only_and_export_lists_everything(api: Api) -> None:
    c = api.client
    assert c is not None
    opml = (b'<?xml version="1.0"?><opml version="2.0"><body><outline text="Tech">'
            b'<outline text="A" xmlUrl="https://a.example/rss"/>'
            b'<outline text="Internal" xmlUrl="http://192.168.1.10/rss"/></outline>'
            b'<outline text="Bad" xmlUrl="ftp://b.example/rss"/></body></opml>')
    assert c.post("/v1/feeds/import", content=opml, headers=api.h(api.alice)).status_code == 403
    r = c.post("/v1/feeds/import", content=opml, headers=api.h(api.admin))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["added"] == [feed_id("https://a.example/rss")]
    reasons = {s["url"]: s["reason"] for s in body["skipped"]}
    assert set(reasons) == {"http://192.168.1.10/rss", "ftp://b.example/rss"}
    again = c.post("/v1/feeds/import", content=opml, headers=api.h(api.admin)).json()
    assert again["added"] == [] and again["existing"] == [feed_id("https://a.example/rss")]
    bad = c.post("/v1/feeds/import", content=b"<!DOCTYPE x [<!ENTITY a 'b'>]><opml/>", headers=api.h(api.admin))
    assert bad.status_code == 422
    out = c.get("/v1/feeds/export", headers=api.h(api.bob))
    assert out.status_code == 200 and b'xmlUrl="https://a.example/rss"' in out.content
    assert 'category="Tech"' in out.text
