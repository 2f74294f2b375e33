"""The alerts routes (subscriptions, test send, stories, deliveries) against the real Redis and Kafka, with
the alerts worker delivering to a real receiver."""

from __future__ import annotations

import json

import api_support
import pytest
from api_support import Api

from alerts.worker import AlertsWorker
from tests.integration.alerts_support import Receiver, match, produce, read_deliveries, running
from wirewatch import registry, state
from wirewatch.records import Topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
api, api_settings = api_support.api, api_support.api_settings


def _topic(a: Api) -> None:
    registry.topics(state.connect(a.settings), a.settings).put(Topic(id="syria", name="Syria"))


def _sub(url: str, sid: str = "desk", **extra: object) -> dict[str, object]:
    return {"id": sid, "topic_id": "syria", "channel": {"type": "webhook", "target": url, "secret": "s3cret"}} | extra


def test_subscription_crud_is_owned_and_never_shows_secrets(api: Api) -> None:
    assert api.client is not None
    c, alice, bob = api.client, api.h(api.alice), api.h(api.bob)
    _topic(api)
    r = c.post("/v1/subscriptions", json=_sub("http://127.0.0.1:9/hook/TOKEN"), headers=alice)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["channel"]["secret"] == "***" and "TOKEN" not in r.text and body["owner"] == api.alice_id
    assert c.post("/v1/subscriptions", json=_sub("http://127.0.0.1:9/x"), headers=alice).status_code == 409
    assert [s["id"] for s in c.get("/v1/subscriptions", headers=alice).json()] == ["desk"]
    assert c.get("/v1/subscriptions", headers=bob).json() == []
    assert c.get("/v1/subscriptions/desk", headers=bob).status_code == 404  # not 403: ids do not leak
    r = c.patch("/v1/subscriptions/desk", json={"min_score": 0.7, "muted_until": "2030-01-01T00:00:00Z"},
                headers=alice)
    assert r.status_code == 200 and r.json()["min_score"] == 0.7 and r.json()["muted_until"].startswith("2030")
    assert c.delete("/v1/subscriptions/desk", headers=bob).status_code == 404
    assert c.delete("/v1/subscriptions/desk", headers=alice).status_code == 204
    assert c.get("/v1/subscriptions/desk", headers=alice).status_code == 404


@pytest.mark.parametrize(("channel", "status"), [
    ({"type": "webhook", "target": "http://169.254.169.254/latest/meta-data"}, 422),  # SSRF: link-local
    ({"type": "webhook", "target": "file:///etc/passwd"}, 422),
    ({"type": "email", "target": "desk@example.org\r\nBcc: x@example.org"}, 422),
    ({"type": "apprise", "target": "json://127.0.0.1:9/x"}, 403),  # Apprise reaches anything: admin only
    ({"type": "pager", "target": "x"}, 422),
])
def test_bad_channel_targets_are_refused_with_a_reason(api: Api, channel: dict[str, str], status: int) -> None:
    assert api.client is not None
    _topic(api)
    r = api.client.post("/v1/subscriptions", json={"topic_id": "syria", "channel": channel}, headers=api.h(api.alice))
    assert r.status_code == status, r.text
    assert r.json().get("detail") or r.json().get("errors")


def test_unknown_topic_is_refused(api: Api) -> None:
    assert api.client is not None
    r = api.client.post("/v1/subscriptions", json=_sub("http://127.0.0.1:9/h") | {"topic_id": "nope"},
                        headers=api.h(api.alice))
    assert r.status_code == 422 and "nope" in r.text


def test_test_send_reaches_the_receiver_marked_as_test(api: Api) -> None:
    assert api.client is not None
    _topic(api)
    with Receiver(secret="s3cret") as rx:
        assert api.client.post("/v1/subscriptions", json=_sub(rx.url), headers=api.h(api.alice)).status_code == 201
        r = api.client.post("/v1/subscriptions/desk/test", headers=api.h(api.alice))
        assert r.status_code == 200, r.text
    assert len(rx.accepted) == 1 and rx.accepted[0]["json"]["kind"] == "test"
    assert rx.accepted[0]["json"]["heading"].startswith("[TEST] ")


def test_test_send_to_a_failing_channel_is_502_with_the_reason(api: Api) -> None:
    assert api.client is not None
    _topic(api)
    with Receiver(behaviour=lambda rx, req: (404, {})) as rx:
        api.client.post("/v1/subscriptions", json=_sub(rx.url), headers=api.h(api.alice))
        r = api.client.post("/v1/subscriptions/desk/test", headers=api.h(api.alice))
    assert r.status_code == 502 and "HTTP 404" in r.json()["detail"]


def test_stories_and_deliveries_after_the_worker_ran(api: Api) -> None:
    assert api.client is not None
    c = api.client
    _topic(api)
    with Receiver(secret="s3cret") as rx:
        assert c.post("/v1/subscriptions", json=_sub(rx.url), headers=api.h(api.alice)).status_code == 201
        title = "Evacuation of Daraya begins as buses leave the besieged town"
        produce(api.settings, [match("d1", title, source="Reuters"), match("d2", title, source="AFP")])
        with running(AlertsWorker(api.settings.model_copy(update={"alerts": api.settings.alerts.model_copy(
                update={"metrics_port": None})}))):
            assert rx.wait_for(1, 60)
            read_deliveries(api.settings, 2, 30)
    stories = c.get("/v1/stories", params={"topic": "syria"}, headers=api.h(api.bob)).json()
    assert len(stories) == 1 and stories[0]["article_count"] == 2
    one = c.get(f"/v1/stories/{stories[0]['id']}", headers=api.h(api.bob)).json()
    assert {a["source"] for a in one["articles"]} == {"Reuters", "AFP"} and one["title"] == title
    assert c.get("/v1/stories/unknown", headers=api.h(api.bob)).status_code == 404
    mine = c.get("/v1/deliveries", headers=api.h(api.alice)).json()
    assert sorted(d["status"] for d in mine) == ["sent", "suppressed"]
    assert c.get("/v1/deliveries", headers=api.h(api.bob)).json() == []  # bob owns no subscription
    assert len(c.get("/v1/deliveries", params={"subscription": "desk"}, headers=api.h(api.admin)).json()) == 2


@pytest.mark.parametrize(("extra", "field"), [
    ({"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus_Mons"}}, "quiet_hours.timezone"),
    ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours.end"),
    ({"mode": "digest", "digest": {"period": "daily", "timezone": "Europe/Atlantis"}}, "digest.timezone"),
    ({"mode": "digest", "digest": {"period": 0}}, "digest.period"),
    ({"rate_limit": {"count": 0, "per_seconds": 60}}, "rate_limit.count"),
    ({"rate_limit": {"count": 5, "per_seconds": -1}}, "rate_limit.per_seconds"),
    ({"min_score": 1.5}, "min_score"),
    ({"muted_until": "next tuesday"}, "muted_until"),
])
def test_a_subscription_that_would_fail_at_run_time_gets_422_naming_the_field(
        api: Api, extra: dict[str, object], field: str) -> None:
    assert api.client is not None
    _topic(api)
    alice = api.h(api.alice)
    r = api.client.post("/v1/subscriptions", json=_sub("http://127.0.0.1:9/h", sid="bad", **extra), headers=alice)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"], r.text
    assert api.client.get("/v1/subscriptions/bad", headers=alice).status_code == 404
    ok = api.client.post("/v1/subscriptions", json=_sub("http://127.0.0.1:9/h", sid="ok"), headers=alice)
    assert ok.status_code == 201, ok.text
    r = api.client.patch("/v1/subscriptions/ok", json=extra, headers=alice)
    assert r.status_code == 422 and field in r.json()["detail"], r.text
    stored = registry.subscriptions(state.connect(api.settings), api.settings).get("ok")
    assert stored is not None and stored.quiet_hours is None and stored.digest is None and stored.rate_limit is None
    assert stored.min_score == 0.0 and stored.muted_until is None


def test_a_subscription_stored_before_the_checks_stays_readable_and_can_be_fixed_or_deleted(api: Api) -> None:
    assert api.client is not None
    c, alice = api.client, api.h(api.alice)
    _topic(api)
    legacy = {"v": "1.0", "id": "old", "topic_id": "syria", "owner": api.alice_id,
              "channel": {"type": "webhook", "target": "http://127.0.0.1:9/h"},
              "quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus_Mons"}}
    state.connect(api.settings).hset(state.key(api.settings, "reg", "subscriptions"), "old", json.dumps(legacy))
    r = c.get("/v1/subscriptions/old", headers=alice)
    assert r.status_code == 200 and r.json()["quiet_hours"]["timezone"] == "Mars/Olympus_Mons", r.text
    assert [s["id"] for s in c.get("/v1/subscriptions", headers=alice).json()] == ["old"]
    r = c.patch("/v1/subscriptions/old", json={"min_score": 0.5}, headers=alice)
    assert r.status_code == 422 and "quiet_hours.timezone" in r.json()["detail"], "a change must fix it too"
    r = c.patch("/v1/subscriptions/old", json={"min_score": 0.5, "quiet_hours": None}, headers=alice)
    assert r.status_code == 200 and r.json()["quiet_hours"] is None, r.text
    assert c.delete("/v1/subscriptions/old", headers=alice).status_code == 204
