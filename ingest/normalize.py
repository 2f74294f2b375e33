"""Raw feed entries to :class:`Article` records: plain text, UTC dates, one identity, bounded sizes.

Every text field is plain text: tags removed (script/style bodies with them), entities decoded, whitespace
folded to single spaces, and cut at a word boundary to its cap. Dates are UTC; an entry without a usable date
gets the fetch time, and one dated further in the future than ``future_tolerance_s`` is clamped to the fetch
time; both are flagged ``published_estimated``. Identity is :func:`wirewatch.identity.article_id`, nothing else.
The language is an ISO 639-1 code: the entry's declared one, else the feed's, else detected from the title and
summary (:mod:`wirewatch.language`); None when neither declares one and the text is too short to tell.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from ingest.parser import ParsedFeed, RawEntry
from wirewatch.identity import article_id, canonical_url
from wirewatch.language import detect, normalize_language
from wirewatch.records import Article
from wirewatch.settings import IngestSettings

_DROP_BLOCKS = re.compile(r"<(script|style|noscript|template)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<![^<>]*>|<\?[^<>]*>")
# Inline markup joins the words around it; anything else (paragraphs, breaks, cells) separates them.
_INLINE_TAG = re.compile(
    r"</?(?:a|abbr|b|bdi|bdo|cite|code|data|dfn|em|font|i|kbd|mark|q|s|samp|small|span|strong|sub|sup|time|u|var)"
    r"(?:\s[^<>]*)?/?>", re.IGNORECASE)
_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _strip_tags(text: str) -> str:
    if "<![CDATA[" in text:
        text = _CDATA.sub(r"\1", text)
    lowered = text.lower()
    if "<script" in lowered or "<style" in lowered or "<noscript" in lowered or "<template" in lowered:
        text = _DROP_BLOCKS.sub(" ", text)
    if "<!--" in text:
        text = _COMMENT.sub(" ", text)
    return _TAG.sub(" ", _INLINE_TAG.sub("", text))


RAW_FACTOR = 64
RAW_MIN = 65_536


def plain_text(value: str, limit: int) -> str:
    """HTML or text to folded plain text of at most ``limit`` characters (cut at a word where possible)."""
    if not value:
        return ""
    # Markup can be far longer than its text, but not without bound: a hostile 10 MB summary took the worker
    # past 300 MiB in the regular expressions below, for a field that keeps 2,000 characters.
    raw_cap = max(limit * RAW_FACTOR, RAW_MIN)
    text = value[:raw_cap] if len(value) > raw_cap else value
    if "<" in text:
        text = _strip_tags(text)
    if "&" in text:
        text = html.unescape(text)
        if "<" in text and _TAG.search(text):
            # Double-escaped markup (``&lt;p&gt;``) is still markup once decoded.
            text = _strip_tags(text)
    text = _WS.sub(" ", _CONTROL.sub("", text)).strip()
    if len(text) > limit:
        cut = text[:limit]
        space = cut.rfind(" ")
        text = (cut[:space] if space > limit * 0.8 else cut[: limit - 1]).rstrip() + "…"
    return text


def content_hash(title: str, summary: str) -> str:
    """A short digest of what a reader sees; a change means the entry was retitled or edited."""
    return hashlib.blake2b(f"{title}\x1f{summary}".encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


# Longer than any link a browser or server keeps (RFC 9110 asks for at least 8,000 octets); such a "link" is
# not one, and a megabyte of it would make the article larger than a Kafka record may be.
MAX_LINK_CHARS = 8192


def _link(value: str | None) -> str | None:
    if not value or len(value) > MAX_LINK_CHARS:
        return None
    try:
        return canonical_url(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Normalized:
    """An article and its content hash, or why an entry was dropped."""

    article: Article
    digest: str


def _source(parsed: ParsedFeed, feed_name: str, feed_url: str) -> str:
    if feed_name:
        return feed_name
    if parsed.title:
        return plain_text(parsed.title, 200)
    host = urlsplit(feed_url).hostname or ""
    return host.removeprefix("www.")


def normalize_entry(entry: RawEntry, *, parsed: ParsedFeed, feed_url: str, identity_feed_url: str,
                    feed_id: str | None, feed_name: str, fetched_at: datetime,
                    cfg: IngestSettings) -> Normalized:
    """One entry to an Article.

    Raises:
        ValueError: when the entry has no link, GUID or title to identify it.
    """
    title = plain_text(entry.title, cfg.title_max_chars)
    summary = plain_text(entry.summary, cfg.summary_max_chars)
    content = plain_text(entry.content, cfg.content_max_chars) if cfg.content_max_chars else ""
    if not summary and content:
        summary = plain_text(content, cfg.summary_max_chars)
    if content == summary:
        content = ""
    url = _link(entry.link)
    if not title:
        title = plain_text(summary, 160)
    aid = article_id(url=url, feed_url=identity_feed_url, guid=entry.guid, title=title or None,
                     published=entry.published_raw)
    published, estimated = entry.published, False
    if published is None:
        published, estimated = fetched_at, True
    elif published > fetched_at + timedelta(seconds=cfg.future_tolerance_s):
        published, estimated = fetched_at, True
    language = (normalize_language(entry.language) or normalize_language(parsed.language)
                or detect(f"{title}\n{summary}"))
    if not title:
        title = url or entry.guid or ""
    article = Article(
        id=aid, url=url, title=title, summary=summary, content=content or None,
        published_at=published, fetched_at=fetched_at, published_estimated=estimated,
        feed_url=feed_url, feed_id=feed_id, source=_source(parsed, feed_name, feed_url),
        authors=tuple(dict.fromkeys(plain_text(a, 200) for a in entry.authors if a.strip()))[:20],
        language=language,
        tags=tuple(dict.fromkeys(plain_text(t, 100) for t in entry.tags if t.strip()))[:50],
    )
    return Normalized(article, content_hash(title, summary))


def normalize(parsed: ParsedFeed, *, feed_url: str, identity_feed_url: str | None = None, feed_id: str | None = None,
              feed_name: str = "", fetched_at: datetime, cfg: IngestSettings,
              ) -> tuple[list[Normalized], list[tuple[int, str]]]:
    """All entries of a parsed feed, in feed order, each identity once (the first occurrence wins).

    Returns the normalized entries and, for each entry that could not be identified, its index and why.
    """
    out: list[Normalized] = []
    bad: list[tuple[int, str]] = []
    ids: set[str] = set()
    for i, entry in enumerate(parsed.entries):
        try:
            n = normalize_entry(entry, parsed=parsed, feed_url=feed_url,
                                identity_feed_url=identity_feed_url or feed_url, feed_id=feed_id,
                                feed_name=feed_name, fetched_at=fetched_at, cfg=cfg)
        except ValueError as exc:
            bad.append((i, str(exc)[:200]))
            continue
        if n.article.id in ids:
            continue
        ids.add(n.article.id)
        out.append(n)
    return out, bad


def articles(items: Iterable[Normalized]) -> list[Article]:
    """The articles of normalized items."""
    return [n.article for n in items]
