"""Feed bytes to entries: feedparser for RSS 0.9x/1.0/2.0 and Atom 0.3/1.0, our own parser for JSON Feed 1.x.

Hostile XML is defused before feedparser sees it: a DOCTYPE with an internal subset (where entity
declarations live: billion laughs, external entities pointing at local files) is cut out of the prolog, so
nothing is expanded and nothing is read; references to the removed entities stay inert text. feedparser's
own SAX parser additionally has external general entities switched off, and expat (>= 2.4) refuses
amplification attacks on its own, so each layer would hold by itself.
"""

from __future__ import annotations

import codecs
import email.utils
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser


class ParseError(ValueError):
    """The bytes are not a feed we can read at all (as opposed to a bozo feed that still has entries)."""


@dataclass(frozen=True)
class RawEntry:
    """One entry as the feed gave it, before normalization. Text fields may hold HTML."""

    link: str | None = None
    guid: str | None = None
    title: str = ""
    summary: str = ""
    content: str = ""
    published: datetime | None = None
    published_raw: str = ""
    updated: datetime | None = None
    authors: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    language: str | None = None


@dataclass(frozen=True)
class ParsedFeed:
    """A parsed feed: its entries and what it said about itself."""

    format: str
    title: str = ""
    link: str | None = None
    language: str | None = None
    ttl_s: float | None = None
    entries: tuple[RawEntry, ...] = ()
    problem: str | None = None
    """The bozo error type when the feed was malformed (entries may still be usable)."""
    problem_detail: str = ""
    hostile: bool = False
    """True when a DOCTYPE with entity declarations was removed before parsing."""
    extra: dict[str, Any] = field(default_factory=dict)
    """``text_cut``: how many overlong text runs were cut before parsing (:func:`cut_long_text`)."""


# -- hostile DOCTYPE removal -----------------------------------------------------------------------------
_DOCTYPE_HINT = re.compile(rb"<!doctype", re.IGNORECASE)
_ENC_DECL = re.compile(r"""(<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")


def _skip_subset(s: str, i: int) -> tuple[int, bool]:
    """Index just past the internal subset's closing ``]`` and whether it declares entities."""
    n = len(s)
    entities = False
    while i < n:
        c = s[i]
        if c in "\"'":
            j = s.find(c, i + 1)
            i = n if j < 0 else j + 1
        elif s.startswith("<!--", i):
            j = s.find("-->", i + 4)
            i = n if j < 0 else j + 3
        elif s.startswith("<?", i):
            j = s.find("?>", i + 2)
            i = n if j < 0 else j + 2
        elif c == "]":
            return i + 1, entities
        else:
            if c == "%" or s[i:i + 8].upper() == "<!ENTITY":
                entities = True
            i += 1
    return n, True


def find_doctype(s: str) -> tuple[int, int, bool, bool] | None:
    """Locate the DOCTYPE in the prolog of ``s``: (start, end, has internal subset, declares entities)."""
    i, n = 0, len(s)
    while i < n:
        if s[i].isspace() or s[i] == "\ufeff":
            i += 1
        elif s.startswith("<?", i):
            j = s.find("?>", i + 2)
            if j < 0:
                return None
            i = j + 2
        elif s.startswith("<!--", i):
            j = s.find("-->", i + 4)
            if j < 0:
                return None
            i = j + 3
        elif s[i:i + 9].upper() == "<!DOCTYPE":
            start, i = i, i + 9
            subset = entities = False
            while i < n:
                c = s[i]
                if c in "\"'":
                    j = s.find(c, i + 1)
                    i = n if j < 0 else j + 1
                elif c == "[":
                    subset = True
                    i, entities = _skip_subset(s, i + 1)
                elif c == ">":
                    return start, i + 1, subset, entities
                else:
                    i += 1
            return start, n, subset, True
        else:
            return None
    return None


def _wide_codec(data: bytes) -> str | None:
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return codec
    head = data[:4]
    if head in (b"\x00\x00\x00<", b"<\x00\x00\x00"):
        return "utf-32-be" if head[0] == 0 else "utf-32-le"
    if head in (b"\x00<\x00?", b"<\x00?\x00"):
        return "utf-16-be" if head[0] == 0 else "utf-16-le"
    return None


def defuse(data: bytes, headers: Mapping[str, str]) -> tuple[bytes, dict[str, str], bool]:
    """Cut a DOCTYPE that has an internal subset out of the prolog.

    Returns the bytes to parse, the headers to parse them with (the charset is rewritten when a UTF-16/32
    document had to be transcoded) and whether entity declarations were found.
    """
    hdrs = dict(headers)
    wide = _wide_codec(data)
    if wide is None:
        if not _DOCTYPE_HINT.search(data):
            return data, hdrs, False
        text = data.decode("latin-1")  # one char per byte: indices stay byte offsets
        found = find_doctype(text[3:] if data.startswith(codecs.BOM_UTF8) else text)
        if not found or not found[2]:
            return data, hdrs, False
        off = 3 if data.startswith(codecs.BOM_UTF8) else 0
        start, end, _, entities = found
        return data[:start + off] + data[end + off:], hdrs, entities
    text = data.decode(wide, errors="replace")
    found = find_doctype(text)
    if not found or not found[2]:
        return data, hdrs, False
    start, end, _, entities = found
    text = _ENC_DECL.sub(r"\1\2utf-8\2", text[:start] + text[end:], count=1).lstrip("\ufeff")
    hdrs["content-type"] = "application/xml; charset=utf-8"
    return text.encode("utf-8"), hdrs, entities


_CHARREF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,16})|([0-9]{1,20}));")


def _valid_charrefs(data: bytes) -> bytes:
    """Numeric character references outside Unicode (``&#xFFFFFFFF;``, ``&#0;``) as U+FFFD.

    feedparser calls ``chr()`` on them and raises OverflowError, losing the whole feed for one bad reference.
    """
    if b"&#" not in data:
        return data

    def fix(m: re.Match[bytes]) -> bytes:
        value = int(m.group(1), 16) if m.group(1) else int(m.group(2))
        return m.group(0) if 0 < value <= 0x10FFFF else b"&#xFFFD;"

    return _CHARREF.sub(fix, data)


# -- overlong text ---------------------------------------------------------------------------------------
# A text run is cut to this many bytes before parsing. Normalization reads at most 64x a field's kept length
# (256,000 characters of a 4,000-character content, 64 KiB of a title) and drops a link past 8,192: a run this
# long still holds all of that at eight bytes a character. A 10 MB title cost 60 MiB in feedparser (lxml refuses
# text nodes over 10 MB), and three such feeds at once took the worker past its 300 MiB.
MAX_TEXT_BYTES = 2 << 20
# Text between a tag's end and the next tag's start, with no ``>`` in it: never inside a tag, a comment's
# or CDATA section's terminator, or a processing instruction, so cutting it keeps the document's structure.
_LONG_TEXT = re.compile(rb">([^<>]{%d,})<" % MAX_TEXT_BYTES)
# Encodings in which ``<``, ``>`` and ``&`` are always those characters and a cut at a UTF-8 character start
# splits no character (single-byte codecs have no multi-byte characters to split).
_CUTTABLE = re.compile(r"utf-?8|us-ascii|ascii|iso-?8859-\d+|latin-?1|windows-125\d|cp125\d")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._-]+)", re.IGNORECASE)
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def cut_long_text(data: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
    """``data`` with every text run over :data:`MAX_TEXT_BYTES` cut to that length; and how many were cut.

    A cut never splits a UTF-8 character or a character reference. Documents in UTF-16/32 or a multi-byte
    legacy charset (Shift_JIS, GB18030, ...) are left alone: a byte-level cut could split their characters.
    """
    if len(data) <= MAX_TEXT_BYTES or _wide_codec(data) is not None:
        return data, 0
    m = _CHARSET.search(headers.get("content-type", ""))
    declared = _DECLARED.match(data.removeprefix(codecs.BOM_UTF8))
    for name in (m.group(1) if m else None, declared.group(1).decode() if declared else None):
        if name is not None and not _CUTTABLE.fullmatch(name.lower()):
            return data, 0
    pieces: list[bytes] = []
    last = 0
    for run in _LONG_TEXT.finditer(data):
        keep = run.start(1) + MAX_TEXT_BYTES
        while keep > run.start(1) and data[keep] & 0xC0 == 0x80:  # back to a UTF-8 character's first byte
            keep -= 1
        amp = data.rfind(b"&", keep - 32, keep)
        if amp >= 0 and b";" not in data[amp:keep]:
            keep = amp
        pieces.append(data[last:keep])
        last = run.end(1)
    if not pieces:
        return data, 0
    pieces.append(data[last:])
    return b"".join(pieces), len(pieces) - 1


# -- feedparser ------------------------------------------------------------------------------------------
def struct_time_utc(parsed: Any) -> datetime | None:
    """A feedparser ``*_parsed`` time tuple (UTC) as a datetime; None when absent or impossible."""
    if not parsed:
        return None
    try:
        y, mo, d, h, mi, sec = (int(v) for v in parsed[:6])
        return datetime(y, mo, d, h, mi, min(sec, 59), tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _entry(raw: Any, feed_lang: str | None) -> RawEntry:
    # Plain dict access: FeedParserDict.get maps missing keys onto others (updated -> published) with warnings.
    e: dict[str, Any] = dict(raw)
    content = ""
    for c in e.get("content") or ():
        if c.get("value"):
            content = c["value"]
            break
    authors = tuple(a["name"] for a in e.get("authors") or () if isinstance(a, dict) and a.get("name"))
    if not authors and _text(e.get("author")):
        authors = (e["author"],)
    tags = tuple(t["term"] for t in e.get("tags") or () if isinstance(t, dict) and t.get("term"))
    detail = e.get("title_detail") or e.get("summary_detail") or {}
    published = next((t for k in ("published_parsed", "updated_parsed", "created_parsed")
                      if (t := struct_time_utc(e.get(k))) is not None), None)
    return RawEntry(
        link=_text(e.get("link")) or None,
        guid=_text(e.get("id")) or None,
        title=_text(e.get("title")),
        summary=_text(e.get("summary")),
        content=content,
        published=published,
        published_raw=_text(e.get("published") or e.get("updated") or e.get("created")),
        updated=struct_time_utc(e.get("updated_parsed")),
        authors=authors,
        tags=tags,
        language=_text(detail.get("language")) or feed_lang,
    )


def parse_xml(body: bytes, headers: Mapping[str, str], url: str, *, fast: bool = True) -> ParsedFeed:
    """Parse an RSS or Atom document: the lxml fast path when it applies, else feedparser.

    Neither touches the network; feedparser runs without its HTML sanitizer (we keep plain text only).
    ``fast=False`` forces feedparser.
    """
    from ingest.fastparse import fast_parse  # the fast path builds this module's records

    data, hdrs, hostile = defuse(body, headers)
    data, cut = cut_long_text(data, hdrs)
    if fast and not hostile:
        quick = fast_parse(data, hdrs, url)
        if quick is not None and quick.entries:
            return replace(quick, extra={"text_cut": cut}) if cut else quick
    hdrs.setdefault("content-location", url)
    # No declared type (a file, a bare server): XML rules apply, the document's own declaration names its charset.
    hdrs.setdefault("content-type", "application/xml")
    data = _valid_charrefs(data)
    try:
        d = feedparser.parse(io.BytesIO(data), response_headers=hdrs, sanitize_html=False,
                             resolve_relative_uris=False)
    except (ValueError, OverflowError, RecursionError, LookupError) as failure:
        # feedparser's own bugs on hostile input are this feed's parse failure, never the worker's.
        raise ParseError(f"not a feed: {type(failure).__name__}: {failure}"[:300]) from failure
    feed = d.get("feed") or {}
    lang = _text(feed.get("language")) or _text(hdrs.get("content-language")) or None
    problem = detail = None
    if d.get("bozo"):
        exc = d.get("bozo_exception")
        problem = type(exc).__name__ if exc is not None else "bozo"
        detail = str(exc)[:300] if exc is not None else ""
    ttl = feed.get("ttl")
    ttl_s = float(ttl) * 60 if isinstance(ttl, str) and ttl.strip().isdigit() else None
    entries = tuple(_entry(e, lang) for e in d.get("entries") or [])
    if not entries and not d.get("version") and problem:
        raise ParseError(f"not a feed: {problem}: {detail}"[:300])
    return ParsedFeed(
        format=d.get("version") or "unknown", title=_text(feed.get("title")), link=_text(feed.get("link")) or None,
        language=lang, ttl_s=ttl_s, entries=entries, problem=problem, problem_detail=detail or "", hostile=hostile,
        extra={"text_cut": cut} if cut else {},
    )


# -- JSON Feed -------------------------------------------------------------------------------------------
def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip()
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(v)
        except (TypeError, ValueError):
            return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def _json_authors(obj: Mapping[str, Any]) -> tuple[str, ...]:
    people = obj.get("authors")
    if not isinstance(people, list):
        one = obj.get("author")
        people = [one] if isinstance(one, dict) else []
    return tuple(p["name"] for p in people if isinstance(p, dict) and isinstance(p.get("name"), str) and p["name"])


def parse_json(body: bytes, url: str) -> ParsedFeed:
    """Parse a JSON Feed (1.0 or 1.1).

    Raises:
        ParseError: when the body is not JSON or not a JSON Feed.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"not valid JSON: {exc}"[:300]) from exc
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/"):
        raise ParseError("JSON document is not a JSON Feed (no jsonfeed.org version)")
    version = str(doc["version"]).rsplit("/", 1)[-1]
    lang = doc.get("language") if isinstance(doc.get("language"), str) else None
    feed_authors = _json_authors(doc)
    items = doc.get("items")
    if not isinstance(items, list):
        raise ParseError("JSON Feed has no items array")
    entries = []
    for it in items:
        if not isinstance(it, dict):
            continue
        link = it.get("url") if isinstance(it.get("url"), str) else None
        if not link and isinstance(it.get("external_url"), str):
            link = it["external_url"]
        guid = it.get("id")
        raw_tags = it.get("tags")
        tags: list[Any] = raw_tags if isinstance(raw_tags, list) else []
        published = _iso(it.get("date_published"))
        entries.append(RawEntry(
            link=urljoin(url, link) if link else None,
            guid=str(guid) if isinstance(guid, str | int) and not isinstance(guid, bool) else None,
            title=_text(it.get("title")),
            summary=_text(it.get("summary")),
            content=_text(it.get("content_html")) or _text(it.get("content_text")),
            published=published or _iso(it.get("date_modified")),
            published_raw=_text(it.get("date_published")) or _text(it.get("date_modified")),
            updated=_iso(it.get("date_modified")),
            authors=_json_authors(it) or feed_authors,
            tags=tuple(t for t in tags if isinstance(t, str)),
            language=it.get("language") if isinstance(it.get("language"), str) else lang,
        ))
    home = doc.get("home_page_url")
    return ParsedFeed(format=f"json{version.replace('.', '')}", title=_text(doc.get("title")),
                      link=home if isinstance(home, str) else None, language=lang, entries=tuple(entries))


def parse(body: bytes, headers: Mapping[str, str], url: str) -> ParsedFeed:
    """Parse a fetched body (headers lower-cased) into entries, choosing JSON Feed or XML by type and content.

    Raises:
        ParseError: when nothing feed-like can be read from the body (a bozo feed with entries is returned).
    """
    ctype = headers.get("content-type", "").lower()
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{") or ("json" in ctype and not head.startswith(b"<")):
        return parse_json(body, url)
    if not body.strip():
        raise ParseError("empty body")
    return parse_xml(body, headers, url)
