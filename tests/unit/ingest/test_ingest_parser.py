"""Parsing fixture feeds: formats, malformed XML that still has entries, hostile XML that must stay inert."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from ingest.defuse import defuse, find_doctype
from ingest.parser import ParseError, parse

FEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "feeds"
URL = "https://feeds.example.com/feed.xml"


def load(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


def test_rss20_entries_dates_ttl_and_language() -> None:
    p = parse(load("rss20.xml"), {"content-type": "application/rss+xml"}, URL)
    assert p.format == "rss20" and p.problem is None
    # isPermaLink defaults to true: feedparser resolves such a GUID like a link.
    assert [e.guid for e in p.entries][:2] == ["ex-1", "https://feeds.example.com/ex-2"]
    assert p.ttl_s == 1800 and p.language == "en-GB"  # lower-cased by normalization
    first = p.entries[0]
    assert first.published is not None and first.published.isoformat() == "2021-06-14T16:15:19+00:00"
    assert first.authors == ("Jane Roe",) and first.tags == ("World",)
    assert p.entries[1].published is None  # "not a date at all"


def test_atom_relative_link_resolved_against_the_feed_url() -> None:
    p = parse(load("atom10.xml"), {"content-type": "application/atom+xml"}, URL)
    assert p.format == "atom10"
    assert p.entries[0].link == "https://feeds.example.com/articles/greve"
    assert p.entries[0].language == "fr"


def test_json_feed_11_items_ids_and_relative_urls() -> None:
    p = parse(load("jsonfeed11.json"), {"content-type": "application/feed+json"}, "https://json.example.net/feed.json")
    assert p.format == "json11" and len(p.entries) == 3
    assert p.entries[1].guid == "2" and p.entries[1].link is None and p.entries[1].authors == ("A. Writer",)
    assert p.entries[2].link == "https://json.example.net/a/3"
    assert p.entries[0].tags == ("quake", "coast")


def test_json_that_is_not_a_json_feed_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="not a JSON Feed"):
        parse(b'{"hello": "world"}', {"content-type": "application/json"}, URL)
    with pytest.raises(ParseError, match="not valid JSON"):
        parse(b'{"version": ', {"content-type": "application/json"}, URL)


def test_html_page_and_empty_body_are_parse_errors() -> None:
    with pytest.raises(ParseError):
        parse(b"<html><body><p>Not a feed</p></body></html>", {"content-type": "text/html"}, URL)
    with pytest.raises(ParseError, match="empty"):
        parse(b"  \n", {}, URL)


def test_malformed_xml_with_entries_is_used_and_flagged() -> None:
    p = parse(load("malformed_with_entries.xml"), {}, URL)
    assert p.problem == "SAXParseException"
    assert [e.title for e in p.entries] == ["First item survives", "Second item survives"]


def test_wrong_declared_charset_is_recovered() -> None:
    body = load("wrong_charset_latin1_declared_utf8.xml")
    p = parse(body, {"content-type": "application/rss+xml; charset=utf-8"}, URL)
    assert p.entries[0].title == "Crème brûlée – a dessert"
    assert p.problem == "CharacterEncodingOverride"


def test_billion_laughs_is_not_expanded() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = parse(load("billion_laughs.xml"), {}, URL)
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert p.hostile
    assert len(p.entries) == 1
    e = p.entries[0]
    assert "lollol" not in e.title and "lollol" not in e.summary
    assert len(e.summary) < 100
    assert grew_kib < 50_000


def test_external_entity_never_reads_the_local_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    body = load("xxe.xml.tmpl").replace(b"@SECRET@", str(secret).encode())
    p = parse(body, {}, URL)
    assert p.hostile
    text = " ".join(e.title + e.summary for e in p.entries)
    assert "TOP-SECRET-VALUE" not in text
    assert p.entries[0].link == "https://xxe.example.com/1"


def test_parameter_entities_and_tricky_quotes_in_the_subset_are_cut() -> None:
    body = (b'<?xml version="1.0"?>\n<!DOCTYPE rss [ <!ENTITY % p "]>"> <!-- ]> --> %p; ]>\n'
            b'<rss version="2.0"><channel><title>t</title><item><title>ok</title><link>https://x.example/1</link>'
            b"</item></channel></rss>")
    data, _, hostile = defuse(body, {})
    assert hostile and b"ENTITY" not in data
    assert parse(body, {}, URL).entries[0].title == "ok"


def test_utf16_document_with_entities_is_transcoded_and_defused() -> None:
    text = load("billion_laughs.xml").decode()
    text = text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-16"?>')
    body = text.encode("utf-16")
    data, headers, hostile = defuse(body, {})
    assert hostile and headers["content-type"].endswith("utf-8") and b"ENTITY" not in data
    p = parse(body, {}, URL)
    assert p.entries and "lollol" not in p.entries[0].summary


def test_doctype_without_subset_is_left_alone() -> None:
    body = (b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
            b'"http://my.netscape.com/publish/formats/rss-0.91.dtd">\n<rss version="0.91"><channel></channel></rss>')
    data, _, hostile = defuse(body, {})
    assert data == body and not hostile
    assert find_doctype("<rss/>") is None


def test_real_feeds_parse_with_entries() -> None:
    """The shared evaluation feeds (read in place, never copied) all yield titled entries."""
    real = Path(__file__).resolve().parents[4] / "shared" / "eval" / "dev" / "feeds"
    paths = sorted(real.glob("*.xml"))
    assert paths, f"no evaluation feeds under {real}"
    for path in paths:
        p = parse(path.read_bytes(), {"content-type": "application/rss+xml"}, "https://real.example/feed")
        assert len(p.entries) >= 5, path.name
        assert all(e.title for e in p.entries), path.name


@pytest.mark.parametrize("name,fmt,title,link,date", [
    ("rss091.xml", "rss091u", "Ninety-one", "http://old.example.com/91", None),
    ("rss10_rdf.xml", "rss10", "RDF item", "http://rdf.example.org/1", "2021-06-14T09:00:00+00:00"),
    ("atom03.xml", "atom03", "Old Atom entry", "http://atom03.example.org/e1", "2021-06-14T11:00:00+00:00"),
])
def test_older_formats_go_through_feedparser(name: str, fmt: str, title: str, link: str, date: str | None) -> None:
    p = parse(load(name), {}, URL)
    assert p.format == fmt
    e = p.entries[0]
    assert (e.title, e.link) == (title, link)
    assert (e.published.isoformat() if e.published else None) == date
