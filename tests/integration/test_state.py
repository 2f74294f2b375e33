"""Redis primitives and the registry against the real redis-server."""

from __future__ import annotations

import time

import pytest

from wirewatch import registry, state
from wirewatch.records import ChannelKind, ChannelSpec, QuietHours, RecordError, Subscription, Topic
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration


def test_redis_round_trip_and_first_seen(settings: Settings) -> None:
    r = state.connect(settings)
    k = state.key(settings, "x")
    r.set(k, b"hello")
    assert r.get(k) == b"hello"
    keys = [state.key(settings, "seen", str(i)) for i in range(5)]
    assert state.first_seen(r, keys[:3], 60) == [True, True, True]
    assert state.first_seen(r, keys, 60) == [False, False, False, True, True]
    assert 0 < r.ttl(keys[0]) <= 60


def test_ledger_claim_lease_and_done(settings: Settings) -> None:
    r = state.connect(settings)
    ledger = state.Ledger(r, ttl_s=3600)
    k = state.key(settings, "ledger", "s1", "story1")
    assert ledger.claim(k, "w1", lease_s=0.5)
    assert not ledger.claim(k, "w2", lease_s=0.5), "a live claim must exclude others"
    assert ledger.claim(k, "w1", lease_s=0.5), "the owner may re-claim"
    time.sleep(0.6)
    assert ledger.claim(k, "w2", lease_s=10), "an expired lease (crashed worker) is taken over"
    ledger.done(k, "sent")
    assert ledger.is_done(k)
    assert not ledger.claim(k, "w3", lease_s=10), "done is final"


def test_rate_limiter_window(settings: Settings) -> None:
    r = state.connect(settings)
    rl = state.RateLimiter(r)
    k = state.key(settings, "rl", "s1")
    results = [rl.allow(k, 3, 1.0) for _ in range(4)]
    assert [ok for ok, _ in results] == [True, True, True, False]
    assert 0 < results[-1][1] <= 1.0
    time.sleep(1.05)
    assert rl.allow(k, 3, 1.0)[0]


def test_rate_limiter_named_slots_are_not_spent_twice(settings: Settings) -> None:
    """A retried batch asks for the same slots again: it gets them back, and the limit is not used up."""
    rl = state.RateLimiter(state.connect(settings))
    k = state.key(settings, "rl", "s2")
    first = rl.allow_many([(k, 2, 5.0, "story-a"), (k, 2, 5.0, "story-b"), (k, 2, 5.0, "story-c")])
    assert [ok for ok, _ in first] == [True, True, False]
    again = rl.allow_many([(k, 2, 5.0, "story-a"), (k, 2, 5.0, "story-b"), (k, 2, 5.0, "story-c")])
    assert [ok for ok, _ in again] == [True, True, False]  # the same answers, no slot taken twice
    assert rl.allow(k, 2, 5.0)[0] is False and rl.allow_many([]) == []


def test_registry_put_seed_delete_and_watch(settings: Settings) -> None:
    r = state.connect(settings)
    reg = registry.topics(r, settings)
    seen: list[list[Topic]] = []
    watcher = registry.Watcher(reg, seen.append, interval_s=0.1).start()
    try:
        assert seen == [[]]
        reg.put(Topic(id="aleppo", name="Aleppo ceasefire", threshold=0.6))
        assert reg.seed([Topic(id="aleppo", name="from config"), Topic(id="brexit", name="Brexit")]) == 1
        assert reg.get("aleppo").name == "Aleppo ceasefire", "seed must not overwrite an API edit"  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not seen or len(seen[-1]) < 2):
            time.sleep(0.05)
        assert [t.id for t in seen[-1]] == ["aleppo", "brexit"]
        assert reg.delete("brexit") and not reg.delete("brexit")
        r.hset(state.key(settings, "reg", "topics"), "broken", b"{garbage")
        assert [t.id for t in reg.all()] == ["aleppo"], "an unreadable entry is skipped, not fatal"
    finally:
        watcher.stop()


def test_registry_seed_refuses_a_subscription_that_fails_its_checks_and_writes_nothing(settings: Settings) -> None:
    reg = registry.subscriptions(state.connect(settings), settings)
    hook = ChannelSpec(type=ChannelKind.WEBHOOK, target="https://hooks.example/desk")
    good = Subscription(id="good", topic_id="syria", channel=hook)
    # built without validation, as a caller holding records from an older, laxer model could
    bad = Subscription.model_construct(id="bad", topic_id="syria", channel=hook, min_score=0.0, mode="instant",
                                       digest=None, rate_limit=None, muted_until=None, follow_ups="material",
                                       enabled=True, owner=None, v="1.0",
                                       quiet_hours=QuietHours.model_construct(start="22:00", end="06:00",
                                                                             timezone="Mars/Olympus_Mons", v="1.0"))
    with pytest.raises(RecordError, match=r"subscription 'bad': field 'quiet_hours.timezone'.*Mars/Olympus_Mons"):
        reg.seed([good, bad])
    assert reg.all() == [] and reg.revision() == 0
    assert reg.seed([good]) == 1 and [s.id for s in reg.all()] == ["good"]
