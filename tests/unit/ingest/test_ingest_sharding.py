"""Config feeds become registry records; shards split feeds evenly and deterministically."""

from __future__ import annotations

from ingest.worker import config_feeds, in_shard
from wirewatch.identity import feed_id
from wirewatch.settings import FeedConfig


def test_config_feeds_are_feed_records_keyed_by_feed_id() -> None:
    feeds = config_feeds([FeedConfig(url="https://a.example/rss", name="A", interval_s=120, tags=("x",)),
                          FeedConfig(url="https://b.example/rss", enabled=False)])
    assert [f.id for f in feeds] == [feed_id("https://a.example/rss"), feed_id("https://b.example/rss")]
    assert feeds[0].name == "A" and feeds[0].interval_s == 120 and feeds[0].tags == ("x",)
    assert not feeds[1].enabled


def test_every_feed_belongs_to_exactly_one_shard_and_shards_are_balanced() -> None:
    ids = [feed_id(f"https://feeds.example/{i}") for i in range(3000)]
    counts = [sum(in_shard(f, k, 3) for f in ids) for k in range(3)]
    assert sum(counts) == 3000
    assert all(900 < c < 1100 for c in counts)
    assert all(sum(in_shard(f, k, 3) for k in range(3)) == 1 for f in ids)
    assert all(in_shard(f, 0, 1) for f in ids)
    assert in_shard("not-hex!", 0, 1) and sum(in_shard("not-hex!", k, 4) for k in range(4)) == 1
