"""Overlong text runs are cut before parsing: the same articles, a fraction of the memory, no broken documents."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

import pytest

from ingest import normalize, parser
from ingest.defuse import MAX_TEXT_BYTES, cut_long_text
from wirewatch.settings import IngestSettings

NOW = datetime(2026, 12, 1, tzinfo=UTC)
FEED = "https://h.example/feed"
RSS = "application/rss+xml; charset=utf-8"


def _rss(title: str, description: str = "d") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title><item>'
            f"<title>{title}</title><link>https://h.example/a</link><description>{description}</description>"
            f"</item></channel></rss>").encode()


def _articles(body: bytes, headers: dict[str, str]) -> list[bytes]:
    feed = parser.parse(body, headers, FEED)
    items, _ = normalize.normalize(feed, feed_url=FEED, identity_feed_url=FEED, feed_id="f", feed_name="H",
                                   fetched_at=NOW, cfg=IngestSettings())
    return [n.article.to_json() for n in items]


@pytest.mark.parametrize("body", [
    _rss("T" * (10 << 20)),  # lxml refuses a text node over 10 MB: this went to feedparser
    _rss("Huge summary", "word " * (2 << 20)),
    _rss("Escaped", "&lt;p&gt;caf&#233; " * (1 << 20)),
])
def test_a_ten_megabyte_field_gives_the_same_article_as_uncut(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    hdrs = {"content-type": RSS}
    tracemalloc.start()
    try:
        cut = _articles(body, hdrs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parser.parse(body, hdrs, FEED).extra == {"text_cut": 1}
    monkeypatch.setattr(parser, "cut_long_text", lambda data, headers: (data, 0))
    assert _articles(body, hdrs) == cut and len(cut) == 1
    # Traced peaks uncut: 50, 50 and 18 MiB (feedparser; lxml refuses text nodes over 10 MB); cut: 4-6 MiB.
    assert peak < 12 << 20, f"{peak / (1 << 20):.0f} MiB traced to parse a 10 MB field"


def test_a_cut_splits_no_utf8_character_and_no_character_reference() -> None:
    for unit in ("é", "€", "𝄞", "&amp;", "&#x1F600;"):
        n = MAX_TEXT_BYTES // len(unit.encode()) + 7
        for pad in range(4):  # every alignment of the unit against the cut
            data = f"<a>{'x' * pad}{unit * n}</a>".encode()
            out, count = cut_long_text(data, {})
            assert count == 1 and len(out) <= MAX_TEXT_BYTES + 16
            text = out.decode("utf-8")  # raises on a split character
            body = text[3 + pad:-4]
            assert body == unit * (len(body) // len(unit)), (unit, pad, body[-12:])


def test_runs_that_end_in_a_terminator_or_sit_in_a_tag_are_left_whole() -> None:
    long = "x" * (MAX_TEXT_BYTES + 10)
    for data in (f"<d><![CDATA[<p>{long}]]></d>",  # CDATA's ]]> is in the run
                 f"<d><!-- a>{long} --></d>",  # a comment's -->
                 f'<d t="a>{long}">text</d>',  # an attribute value
                 f"<d><?pi a>{long}?></d>"):  # a processing instruction
        assert cut_long_text(data.encode(), {}) == (data.encode(), 0)
    cdata = _rss("C", f"<![CDATA[<p>{long}]]>")
    assert parser.parse(cdata, {"content-type": RSS}, FEED).entries[0].summary.startswith("<p>xxx")


def test_documents_whose_bytes_a_cut_could_split_are_left_alone() -> None:
    long = "x" * (MAX_TEXT_BYTES + 10)
    sjis = f'<?xml version="1.0" encoding="Shift_JIS"?><a>{long}</a>'.encode()
    assert cut_long_text(sjis, {}) == (sjis, 0)
    assert cut_long_text(sjis.replace(b"Shift_JIS", b"utf-8"), {"content-type": "text/xml; charset=gb18030"})[1] == 0
    wide = f"<a>{long}</a>".encode("utf-16")
    assert cut_long_text(wide, {}) == (wide, 0)
    assert cut_long_text(f"<a>{long}</a>".encode("latin-1"), {"content-type": "text/xml; charset=ISO-8859-1"})[1] == 1
    assert cut_long_text(_rss("short"), {}) == (_rss("short"), 0)
