"""Pure pieces of the API: secrets, cursors, and the stream hub's fan-out and slow-client drop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from wirewatch.auth import ApiKey, can_see, hash_secret, parse_secret, visible
from wirewatch.records import Article, Match, ModelInfo
from wirewatch.web.matches import Hub, TooManyStreams, decode_cursor, encode_cursor


@pytest.mark.parametrize(
    ("secret", "kid"),
    [
        ("ww_0a1b2c3d4e5f_" + "x" * 43, "0a1b2c3d4e5f"),
        ("ww_0a1b2c3d4e5f_abc-def_ghi" + "y" * 20, "0a1b2c3d4e5f"),
        ("ww_0a1b2c3d4e5f_short", None),
        ("xx_0a1b2c3d4e5f_" + "x" * 43, None),
        ("ww__" + "x" * 43, None),
        ("ww_bad!id_" + "x" * 43, None),
        ("", None),
    ],
)
def test_parse_secret_table(secret: str, kid: str | None) -> None:
    assert parse_secret(secret) == kid


def test_hash_is_sha256_hex_and_not_the_secret() -> None:
    h = hash_secret("ww_abc_" + "z" * 40)
    assert len(h) == 64 and "ww_abc" not in h


def test_visibility_by_owner() -> None:
    now = datetime.now(UTC)
    admin = ApiKey(id="a", name="a", scope="admin", created_at=now)
    alice = ApiKey(id="alice", name="alice", scope="subscriber", created_at=now)

    class Rec:
        def __init__(self, owner: str | None) -> None:
            self.owner = owner

    recs = [Rec("alice"), Rec("bob"), Rec(None)]
    assert visible(admin, recs) == recs
    assert visible(alice, recs) == [recs[0]]
    assert not can_see(alice, None), "an unowned (config) record belongs to admins"


def test_cursor_round_trip_and_garbage() -> None:
    c = encode_cursor(1234567.0, "quakes:abc")
    assert decode_cursor(c) == (1234567.0, "quakes:abc")
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor(1.0, "x")[:-3] + "@@"):
        with pytest.raises(ValueError, match="cursor"):
            decode_cursor(bad)


def _m(topic: str, n: int) -> Match:
    now = datetime.now(UTC)
    a = Article(id=f"a{n}", title=f"t{n}", published_at=now, fetched_at=now, feed_url="https://f.example/rss")
    return Match(article=a, topic_id=topic, score=0.9, threshold=0.5, model=ModelInfo(name="m"))


def test_hub_filters_by_topic_and_drops_for_a_slow_client() -> None:
    async def run() -> tuple[list[str], int, list[str], int]:
        hub = Hub(queue_size=3)
        quakes = hub.subscribe(["quakes"])
        everything = hub.subscribe([])
        hub.publish([_m("quakes", 1), _m("floods", 2)])
        hub.publish([_m("quakes", n) for n in range(3, 8)])
        await asyncio.sleep(0.05)
        got_q = [quakes.queue.get_nowait().id.split(":")[1] for _ in range(quakes.queue.qsize())]
        got_all = [everything.queue.get_nowait().id.split(":")[1] for _ in range(everything.queue.qsize())]
        hub.unsubscribe(quakes)
        hub.unsubscribe(everything)
        return got_q, quakes.dropped, got_all, hub.count()

    got_q, dropped, got_all, left = asyncio.run(run())
    assert got_q == ["a1", "a3", "a4"] and dropped == 3, "a full queue drops newer events and counts them"
    assert got_all == ["a1", "a2", "a3"]
    assert left == 0


def test_hub_caps_streams_per_key() -> None:
    async def run() -> None:
        hub = Hub(queue_size=3, per_owner=2)
        a = hub.subscribe([], "k1")
        hub.subscribe([], "k1")
        hub.subscribe([], "k2")
        with pytest.raises(TooManyStreams, match="k1"):
            hub.subscribe([], "k1")
        hub.unsubscribe(a)
        hub.subscribe([], "k1")

    asyncio.run(run())
