"""The demo's webhook receiver on 127.0.0.1: keep-alive like a production endpoint, repeats acknowledged once,
bad or oversized bodies answered with a status and never taken for the next request."""

from __future__ import annotations

import http.client
import json

from wirewatch.demo import receiver as rx


def _post(conn: http.client.HTTPConnection, body: bytes, key: str = "") -> int:
    conn.request("POST", "/alerts", body=body, headers={"Content-Type": "application/json",
                                                         **({"Idempotency-Key": key} if key else {})})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def test_posts_share_one_connection_and_a_repeated_key_is_counted_not_passed_on() -> None:
    got: list[rx.Received] = []
    r = rx.WebhookReceiver(got.append).start()
    try:
        port = int(r.url.split(":")[2].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert _post(conn, json.dumps({"title": "one"}).encode(), "k1") == 200
        sock = conn.sock
        assert _post(conn, json.dumps({"title": "one again"}).encode(), "k1") == 200
        assert _post(conn, json.dumps({"title": "two"}).encode(), "k2") == 200
        assert _post(conn, b"{not json", "k3") == 400
        assert conn.sock is sock, "the receiver closed a keep-alive connection"
        conn.close()
    finally:
        r.stop()
    assert [g.key for g in got] == ["k1", "k2"] and got[1].body == {"title": "two"}
    assert r.repeats == 1 and r.invalid == 1


def test_a_body_over_the_cap_gets_413_and_its_connection_is_closed(monkeypatch: object) -> None:
    monkeypatch.setattr(rx, "MAX_BODY", 1000)  # type: ignore[attr-defined]
    r = rx.WebhookReceiver().start()
    try:
        port = int(r.url.split(":")[2].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/alerts", body=b"x" * 5000)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 413 and resp.will_close
        conn.close()
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert _post(fresh, b'{"title": "after"}', "k9") == 200
        fresh.close()
    finally:
        r.stop()
    assert [g.key for g in r.received] == ["k9"]
