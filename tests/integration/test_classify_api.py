"""Topic routes against the real redis-server: CRUD with ownership and versions, preview over the recent
store, test with evidence; bad input gets 4xx naming the problem."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from classify.api import classifier_for
from classify.recent import RecentStore
from wirewatch import bus, state
from wirewatch.records import Article
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration

ALEPPO: dict[str, Any] = {
    "id": "aleppo", "name": "Aleppo ceasefire", "description": "Ceasefire and evacuation of eastern Aleppo",
    "examples": ["Aleppo evacuation begins under ceasefire deal", "Buses leave east Aleppo as truce holds"],
    "counter_examples": ["Yemen truce begins"], "include_all": ["Aleppo"], "include_any": ["ceasefire", "truce",
                                                                                          "evacuat*"],
}


@pytest.fixture
def client(make_settings: Any) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str], Settings]]:
    from support_keys import keys

    from wirewatch.api import create_app

    s: Settings = make_settings(classify={"backend": "onnx-int8", "threads": 2})
    bus.ensure_default_topics(s)
    admin, alice, bob = keys(s)
    with TestClient(create_app(s, follow_matches=False)) as c:
        yield c, {"X-API-Key": admin}, {"X-API-Key": alice}, s
    _ = bob


def test_topic_crud_versions_and_ownership(client: Any, make_settings: Any) -> None:
    c, admin, alice, _ = client
    r = c.post("/v1/topics", json=ALEPPO, headers=alice)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["owner"]
    assert c.post("/v1/topics", json=ALEPPO, headers=alice).status_code == 409
    assert [t["id"] for t in c.get("/v1/topics", headers=admin).json()] == ["aleppo"]
    changed = ALEPPO | {"threshold": 0.6, "desk": "world"}
    r = c.put("/v1/topics/aleppo", json=changed, headers=alice)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["threshold"] == 0.6
    assert c.get("/v1/topics/aleppo", headers=alice).json()["desk"] == "world"
    r = c.put("/v1/topics/aleppo", json=changed | {"since": "2016-11-15", "until": "2016-12-31"}, headers=alice)
    assert r.status_code == 200, r.text
    stored = c.get("/v1/topics/aleppo", headers=alice).json()
    assert (stored["since"], stored["until"]) == ("2016-11-15T00:00:00Z", "2017-01-01T00:00:00Z")
    assert c.put("/v1/topics/aleppo", json=ALEPPO | {"id": "other"}, headers=alice).status_code == 422
    assert c.delete("/v1/topics/aleppo", headers={"X-API-Key": "ww_nope_x"}).status_code == 401
    assert c.delete("/v1/topics/aleppo", headers=admin).status_code == 204
    assert c.get("/v1/topics/aleppo", headers=alice).status_code == 404


def test_subscriber_cannot_change_someone_elses_topic(client: Any) -> None:
    c, admin, alice, _ = client
    assert c.post("/v1/topics", json=ALEPPO, headers=admin).status_code == 201
    assert c.put("/v1/topics/aleppo", json=ALEPPO, headers=alice).status_code == 404
    assert c.delete("/v1/topics/aleppo", headers=alice).status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (ALEPPO | {"id": "Bad Id"}, "id"),
        (ALEPPO | {"threshold": 2}, "threshold"),
        (ALEPPO | {"desk": "World Desk"}, "desk"),
        (ALEPPO | {"include_any": ["!!"]}, "no word characters"),
        (ALEPPO | {"version": 9}, "version"),  # server-owned field: refused, not ignored
        (ALEPPO | {"since": "2016-12-01", "until": "2016-11-30"}, "must come after since"),
        (ALEPPO | {"since": "soon"}, "since"),
    ],
)
def test_bad_topic_gets_422_naming_the_field(client: Any, body: dict[str, Any], needle: str) -> None:
    c, admin, _, _ = client
    r = c.post("/v1/topics", json=body, headers=admin)
    assert r.status_code == 422 and needle in r.text


def test_preview_scores_recent_articles_and_test_shows_evidence(client: Any) -> None:
    c, admin, _, s = client
    now = datetime.now(UTC)
    titles = [("Aleppo evacuation resumes under ceasefire deal", 1), ("Buses leave east Aleppo as truce holds", 30),
              ("Central bank holds interest rates", 2), ("Aleppo pepper prices soar", 3),
              ("Old Aleppo evacuation news from last month", 24 * 40)]
    arts = [Article(id=f"a{i}", title=t, published_at=now - timedelta(hours=h), fetched_at=now, feed_url="f",
                    source="wire") for i, (t, h) in enumerate(titles)]
    classifier = classifier_for(s)
    RecentStore(state.connect(s), s).add(arts, classifier.embed([a.text() for a in arts]))
    r = c.post("/v1/topics/preview", json=ALEPPO | {"hours": 48}, headers=admin)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["articles"] == 4  # the 40-day-old one is outside the window
    assert {m["article_id"] for m in out["matches"]} == {"a0", "a1"} and out["matched"] == 2
    assert sum(out["per_day"].values()) == 2
    assert c.post("/v1/topics/preview", json={"hours": 1}, headers=admin).status_code == 422  # no name/description

    assert c.post("/v1/topics", json=ALEPPO, headers=admin).status_code == 201
    r = c.post("/v1/topics/aleppo/test", json={"title": "Aleppo evacuation resumes", "summary": "Under the truce."},
               headers=admin)
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["matched"] and t["topic_version"] == 1 and "Aleppo" in t["evidence"]["keywords"]
    assert t["evidence"]["counter_example"] == "Yemen truce begins" and t["model"]["backend"] == "onnx-int8"
    assert not t["outside_window"]
    # A window that has closed: the text still scores as it would, and the answer says it would not alert now.
    assert c.put("/v1/topics/aleppo", json=ALEPPO | {"until": "2016-12-31"}, headers=admin).status_code == 200
    r = c.post("/v1/topics/aleppo/test", json={"title": "Aleppo evacuation resumes", "summary": "Under the truce."},
               headers=admin)
    closed = r.json()
    assert closed["outside_window"] and not closed["matched"] and not closed["excluded"]
    assert closed["score"] == t["score"] and closed["score"] >= closed["threshold"]
    assert c.post("/v1/topics/nope/test", json={"title": "x"}, headers=admin).status_code == 404
