"""OPML import/export: nested folders to tags, bad URLs skipped with a reason, hostile XML refused."""

from __future__ import annotations

import pytest

from ingest.opml import OpmlError, export_opml, parse_opml
from wirewatch.identity import feed_id

OPML = b"""<?xml version="1.0"?>
<opml version="2.0"><head><title>mine</title></head><body>
  <outline text="World">
    <outline text="BBC World" type="rss" xmlUrl="https://feeds.bbci.co.uk/news/world/rss.xml"/>
    <outline text="Local file" type="rss" xmlUrl="file:///etc/passwd"/>
  </outline>
  <outline text="Tech" title="Tech feed" type="rss" xmlUrl="https://tech.example.com/feed" category="/tech,gadgets"/>
  <outline text="Again" type="rss" xmlUrl="https://tech.example.com/feed"/>
</body></opml>"""


def test_import_reads_nested_outlines_and_skips_bad_urls() -> None:
    got = parse_opml(OPML)
    assert [f.url for f in got.feeds] == ["https://feeds.bbci.co.uk/news/world/rss.xml", "https://tech.example.com/feed"]
    assert got.feeds[0].tags == ("World",) and got.feeds[0].name == "BBC World"
    assert got.feeds[1].tags == ("tech", "gadgets") and got.feeds[1].name == "Tech feed"
    assert got.feeds[0].id == feed_id(got.feeds[0].url)
    reasons = dict(got.skipped)
    assert "file:///etc/passwd" in reasons and reasons["https://tech.example.com/feed"] == "duplicate"


def test_export_round_trips() -> None:
    feeds = parse_opml(OPML).feeds
    again = parse_opml(export_opml(feeds)).feeds
    assert [(f.url, f.name, f.tags) for f in again] == [(f.url, f.name, f.tags) for f in feeds]


@pytest.mark.parametrize("doc,reason", [
    (b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "b">]><opml><body/></opml>', "refused"),
    (b"<opml><body>", "well-formed"),
    (b"<rss/>", "not OPML"),
    (b"<opml><head/></opml>", "no <body>"),
])
def test_bad_documents_get_a_clear_error(doc: bytes, reason: str) -> None:
    with pytest.raises(OpmlError, match=reason):
        parse_opml(doc)
