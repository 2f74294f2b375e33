"""Normalization: plain text, identity, UTC dates with estimates and clamps, caps."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.normalize import content_hash, normalize, plain_text
from ingest.parser import ParsedFeed, RawEntry, parse, parse_xml
from wirewatch.identity import article_id
from wirewatch.settings import IngestSettings

FEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "feeds"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CFG = IngestSettings()
FEED = "https://feeds.example.com/feed.xml"


def norm(entries: list[RawEntry], cfg: IngestSettings = CFG) -> list:
    items, _ = normalize(ParsedFeed("rss20", title="T", entries=tuple(entries)), feed_url=FEED, fetched_at=NOW, cfg=cfg)
    return [n.article for n in items]


def test_plain_text_strips_markup_decodes_entities_and_folds_space() -> None:
    assert plain_text("<p>Hello&nbsp;<b>wor</b>ld</p>\n\n<p>&amp; more</p>", 100) == "Hello world & more"
    assert plain_text("<script>evil()</script><style>p{}</style>ok", 100) == "ok"
    assert plain_text("&lt;p&gt;double&lt;/p&gt; escaped", 100) == "double escaped"
    assert plain_text("A < B and C > D", 100) == "A < B and C > D"
    assert plain_text("ctrl\x00\x07chars", 100) == "ctrlchars"


def test_plain_text_caps_length_at_a_word() -> None:
    out = plain_text("word " * 100, 50)
    assert len(out) <= 50 and out.endswith("…") and not out.endswith(" …")


@given(st.text(max_size=300))
def test_plain_text_never_exceeds_the_cap_and_is_idempotent_on_plain_output(s: str) -> None:
    out = plain_text(s, 120)
    assert len(out) <= 120
    assert out == out.strip()
    assert "  " not in out


def test_fixture_rss_normalizes_to_canonical_urls_and_estimated_dates() -> None:
    p = parse((FEEDS / "rss20.xml").read_bytes(), {}, FEED)
    items, bad = normalize(p, feed_url=FEED, feed_id="f1", fetched_at=NOW, cfg=CFG)
    assert not bad
    a, b, c = (n.article for n in items)
    assert a.url == "https://example.com/news/1?id=7"
    assert a.id == article_id(url="https://example.com/news/1?id=7", feed_url=FEED)
    assert a.title == "Ceasefire agreed in Aleppo" and a.summary == "Talks ended late on Monday & both sides…"
    assert not a.published_estimated and a.published_at.tzinfo is not None
    assert b.published_estimated and b.published_at == NOW  # unparseable date
    assert c.published_estimated and c.published_at == NOW  # year 2100 clamped
    assert a.source == "Example & Daily" and a.language == "en" and a.feed_id == "f1"


def test_identity_falls_back_to_guid_then_title_and_first_duplicate_wins() -> None:
    arts = norm([
        RawEntry(guid="g1", title="First"),
        RawEntry(guid="g1", title="Duplicate GUID"),
        RawEntry(title="Only a title", published_raw="Mon, 01 Apr 2024"),
        RawEntry(link="http://Example.com/x?utm_medium=rss#frag", title="Linked"),
        RawEntry(link="https://example.com/x", title="Same story over https"),
        RawEntry(),
    ])
    assert [a.title for a in arts] == ["First", "Only a title", "Linked"]
    assert arts[0].id == article_id(url=None, feed_url=FEED, guid="g1")
    assert arts[1].id == article_id(url=None, feed_url=FEED, title="Only a title", published="Mon, 01 Apr 2024")


def test_entry_without_anything_to_identify_it_is_reported() -> None:
    empty = ParsedFeed("rss20", entries=(RawEntry(tags=("only a tag",)),))
    _, bad = normalize(empty, feed_url=FEED, fetched_at=NOW, cfg=CFG)
    assert bad and "no link" in bad[0][1]


def test_dates_are_utc_and_near_future_is_kept() -> None:
    soon = NOW + timedelta(seconds=60)
    arts = norm([RawEntry(guid="a", title="t", published=soon)])
    assert arts[0].published_at == soon and not arts[0].published_estimated


def test_caps_apply_to_title_summary_and_content() -> None:
    cfg = IngestSettings(title_max_chars=20, summary_max_chars=30, content_max_chars=40)
    a = norm([RawEntry(guid="a", title="t " * 50, summary="s " * 50, content="c " * 80)], cfg)[0]
    assert len(a.title) <= 20 and len(a.summary) <= 30 and a.content is not None and len(a.content) <= 40


def test_missing_title_uses_the_summary_lead() -> None:
    a = norm([RawEntry(guid="a", summary="<p>Body only</p>")])[0]
    assert a.title == "Body only"


def test_content_hash_changes_with_title_or_summary_only() -> None:
    assert content_hash("a", "b") == content_hash("a", "b")
    assert content_hash("a", "b") != content_hash("a2", "b") != content_hash("a", "b2")


# -- language -------------------------------------------------------------------------------------------
LANG_FIXTURES = sorted(p.name for p in FEEDS.glob("lang_*"))
_EXPECT = re.compile(r"<!-- Expect: languages = (.*?) -->")


def expected_languages(path: Path) -> list[str | None]:
    """The fixture's own expectation: an ``Expect:`` comment in XML, ``_expect`` in a JSON Feed."""
    raw = path.read_text()
    if path.suffix == ".json":
        return list(json.loads(raw)["_expect"]["languages"])
    m = _EXPECT.search(raw)
    assert m, f"{path.name} has no Expect: languages line"
    return [None if code == "-" else code for code in m.group(1).split()]


@pytest.mark.parametrize("name", LANG_FIXTURES)
@pytest.mark.parametrize("fast", [True, False], ids=["lxml", "feedparser"])
def test_language_fixtures(name: str, fast: bool) -> None:
    path = FEEDS / name
    body = path.read_bytes()
    parsed = parse(body, {}, FEED) if path.suffix == ".json" else parse_xml(body, {}, FEED, fast=fast)
    items, bad = normalize(parsed, feed_url=FEED, fetched_at=NOW, cfg=CFG)
    assert not bad
    assert [n.article.language for n in items] == expected_languages(path)


def test_language_fixtures_exist() -> None:
    assert len(LANG_FIXTURES) >= 4


def test_content_language_header_stands_in_for_an_undeclared_feed() -> None:
    body = (FEEDS / "lang_rss_undeclared.xml").read_bytes()
    items, _ = normalize(parse_xml(body, {"content-language": "de-DE, en"}, FEED), feed_url=FEED, fetched_at=NOW,
                         cfg=CFG)
    assert {n.article.language for n in items} == {"de"}


def test_language_entry_over_feed_over_detection() -> None:
    feed = ParsedFeed("rss20", language="en-GB", entries=(
        RawEntry(guid="a", title="Waffenruhe in Aleppo hält den zweiten Tag", language="de_DE"),
        RawEntry(guid="b", title="Waffenruhe in Aleppo hält den zweiten Tag", language="x-default"),
    ))
    items, _ = normalize(feed, feed_url=FEED, fetched_at=NOW, cfg=CFG)
    assert [n.article.language for n in items] == ["de", "en"]
    undeclared = norm([RawEntry(guid="c", title="Waffenruhe", summary="<p>Die Busse warten am Übergang.</p>")])
    assert undeclared[0].language == "de"


@given(st.text(max_size=120), st.text(max_size=200), st.one_of(st.none(), st.text(max_size=12)))
def test_language_is_always_a_two_letter_code_or_none(title: str, summary: str, declared: str | None) -> None:
    arts = norm([RawEntry(guid="g", title=title, summary=summary, language=declared)])
    lang = arts[0].language
    assert lang is None or (len(lang) == 2 and lang.isascii() and lang.isalpha() and lang.islower())
