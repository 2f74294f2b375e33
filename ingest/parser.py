"""Feed bytes to entries: feedparser for RSS 0.9x/1.0/2.0 and Atom 0.3/1.0, our own parser for JSON Feed 1.x.

Hostile XML never reaches feedparser as served: :mod:`ingest.defuse` cuts a DOCTYPE with entity declarations
out of the prolog, replaces impossible character references and cuts overlong text runs first.
"""

from __future__ import annotations

import email.utils
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser

from ingest.defuse import cut_long_text, defuse, valid_charrefs


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
    data = valid_charrefs(data)
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
