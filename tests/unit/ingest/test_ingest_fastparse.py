"""The lxml fast path reads what feedparser reads (after normalization), and hands everything else over."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.fastparse import fast_parse
from ingest.normalize import normalize
from ingest.parser import parse_xml
from wirewatch.settings import IngestSettings

FEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "feeds"
REAL = Path(__file__).resolve().parents[4] / "shared" / "eval" / "dev" / "feeds"
URL = "https://real.example/feed"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
FIELDS = ("id", "url", "title", "published_at", "published_estimated", "authors", "tags", "language")
CFG = IngestSettings()


def both(body: bytes, headers: dict[str, str]) -> tuple[list, list]:
    slow = parse_xml(body, headers, URL, fast=False)
    quick = fast_parse(body, headers, URL)
    assert quick is not None, "fast path declined"
    a, _ = normalize(slow, feed_url=URL, fetched_at=NOW, cfg=CFG)
    b, _ = normalize(quick, feed_url=URL, fetched_at=NOW, cfg=CFG)
    return [n.article for n in a], [n.article for n in b]


def test_fixtures_and_real_feeds_match_feedparser_field_by_field() -> None:
    paths = [FEEDS / "rss20.xml", FEEDS / "atom10.xml", *sorted(REAL.glob("*.xml"))]
    checked = 0
    for path in paths:
        body = path.read_bytes()
        if fast_parse(body, {"content-type": "application/rss+xml"}, URL) is None:
            continue  # e.g. RSS 0.92: feedparser's job
        slow, quick = both(body, {"content-type": "application/rss+xml"})
        assert len(slow) == len(quick), path.name
        for x, y in zip(slow, quick, strict=True):
            for f in FIELDS:
                assert getattr(x, f) == getattr(y, f), (path.name, f)
            # feedparser takes <media:description> (an image caption) as the summary when one precedes
            # <description>; the fast path keeps the item's own description, so summaries may differ there.
            if b"media:description" not in body:
                assert (x.summary, x.content) == (y.summary, y.content), path.name
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("name,body,headers", [
    ("malformed", (FEEDS / "malformed_with_entries.xml").read_bytes(), {}),
    ("charset disagreement", (FEEDS / "wrong_charset_latin1_declared_utf8.xml").read_bytes(),
     {"content-type": "application/rss+xml; charset=utf-8"}),
    ("header says latin-1, document says utf-8", (FEEDS / "rss20.xml").read_bytes(),
     {"content-type": "text/xml; charset=iso-8859-1"}),
    ("rss 0.91", b'<rss version="0.91"><channel><title>t</title><item><title>x</title></item></channel></rss>', {}),
    ("rdf", b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>', {}),
    ("undefined entity", b'<rss version="2.0"><channel><item><title>a&nbsp;b</title></item></channel></rss>', {}),
])
def test_documents_outside_the_fast_path_go_to_feedparser(name: str, body: bytes, headers: dict[str, str]) -> None:
    assert fast_parse(body, headers, URL) is None, name


def test_hostile_documents_never_take_the_fast_path() -> None:
    body = (FEEDS / "billion_laughs.xml").read_bytes()
    p = parse_xml(body, {}, URL)
    assert p.hostile and "lollol" not in p.entries[0].summary


def test_rss_guid_permalink_rules_follow_feedparser() -> None:
    body = (b'<rss version="2.0"><channel><item><title>a</title><guid>rel/1</guid></item>'
            b'<item><title>b</title><guid isPermaLink="false">tag:x,1</guid></item></channel></rss>')
    quick = fast_parse(body, {}, URL)
    slow = parse_xml(body, {}, URL, fast=False)
    assert quick is not None
    assert [(e.link, e.guid) for e in quick.entries] == [(e.link, e.guid) for e in slow.entries]
    assert quick.entries[0].link == "https://real.example/rel/1" and quick.entries[1].link is None
