"""What hostile feeds found: out-of-range character references, megabyte links, records Kafka would refuse."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from ingest import normalize, parser
from ingest.sink import MAX_RECORD_BYTES, KafkaSink
from wirewatch import bus, metrics
from wirewatch.records import Article
from wirewatch.settings import IngestSettings, Settings

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _rss(title: str, link: str) -> bytes:
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item><title>{title}</title>'
            f"<link>{link}</link><guid>g1</guid></item></channel></rss>").encode()


def test_character_references_outside_unicode_become_replacement_characters() -> None:
    # feedparser raised OverflowError on &#xFFFFFFFF; and the whole feed was lost
    for ref in ("&#xFFFFFFFF;", "&#1114112;", "&#0;", "&#99999999999999999999;"):
        feed = parser.parse(_rss(f"Bad {ref} ref", "https://h.example/a"), {}, "https://h.example/feed")
        assert len(feed.entries) == 1, ref
        assert "Bad" in feed.entries[0].title and "ref" in feed.entries[0].title
    fine = parser.parse(_rss("Caf&#233; &#x2014; ok", "https://h.example/b"), {}, "https://h.example/feed")
    assert fine.entries[0].title == "Café — ok"


def test_a_megabyte_link_is_no_link_and_the_article_keeps_its_guid_identity() -> None:
    link = "https://h.example/" + "a" * (1 << 20)
    feed = parser.parse(_rss("Huge link", link), {}, "https://h.example/feed")
    got = normalize.normalize_entry(feed.entries[0], parsed=feed, feed_url="https://h.example/feed",
                                    identity_feed_url="https://h.example/feed", feed_id="f1", feed_name="H",
                                    fetched_at=NOW, cfg=IngestSettings())
    assert got.article is not None and got.article.url is None and got.article.title == "Huge link"
    assert len(got.article.to_json()) < 10_000


class _Producer:
    def __init__(self) -> None:
        self.sent: list[bus.Outgoing] = []

    def send_many(self, records: Sequence[bus.Outgoing], timeout_s: float) -> None:
        self.sent.extend(records)

    def close(self) -> None:
        pass


def _article(aid: str, content: str = "") -> Article:
    return Article(id=aid, title=f"Title {aid}", content=content or None, published_at=NOW, fetched_at=NOW,
                   feed_url="https://h.example/feed", feed_id="f1")


def test_an_article_kafka_would_refuse_is_counted_invalid_and_the_rest_still_go_out() -> None:
    producer = _Producer()
    sink = KafkaSink(Settings(), producer)  # type: ignore[arg-type]
    before = metrics.INGEST_ITEMS.labels("invalid")._value.get()

    async def go() -> None:
        await sink.publish([_article("a1"), _article("big", "x" * (MAX_RECORD_BYTES + 1)), _article("a2")])
        await sink.aclose()

    asyncio.run(go())
    assert [r.key for r in producer.sent] == ["a1", "a2"]
    assert metrics.INGEST_ITEMS.labels("invalid")._value.get() == before + 1


def test_a_ten_megabyte_summary_is_cut_before_its_markup_is_stripped() -> None:
    huge = "<p>" + "word " * (2 << 20) + "</p>"
    text = normalize.plain_text(huge, 2000)
    assert len(text) <= 2000 and text.startswith("word word")
    assert normalize.plain_text("<b>short</b> &amp; sweet", 2000) == "short & sweet"
