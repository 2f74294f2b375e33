"""An article page's main text, with trafilatura, and what went wrong when there is none worth having.

:func:`extract` never raises: a page that is not HTML, a consent or cookie wall, a paywall teaser or a page
with no main text comes back as an :class:`Extraction` whose ``outcome`` says so and whose ``text`` is empty.
The gates are told apart by markers on the page once the main text is found short, so an article that merely
mentions cookies or subscriptions keeps its text. The page's own headline (its ``<h1>``, ``og:title`` or
``<title>``), which trafilatura returns as the first line, is dropped: the classifier already embeds the
article's title, and would otherwise read it twice.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import trafilatura

from ingest.normalize import plain_text

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_PAYWALL = re.compile(
    rb'"isAccessibleForFree"\s*:\s*"?false|paywall|subscribe to (?:continue|read)|subscribers only|'
    rb"to continue reading|already a subscriber|this (?:article|content) is for subscribers", re.IGNORECASE)
_COOKIE = re.compile(rb"accept (?:all )?cookies|we use cookies|cookie (?:wall|policy|settings|consent)|cookiebanner",
                     re.IGNORECASE)
_CONSENT = re.compile(rb"__tcfapi|consent-?(?:form|page|wall|management)|manage (?:your )?(?:privacy|consent)|"
                      rb"before you continue|i agree", re.IGNORECASE)
_HEADLINE = re.compile(rb"<h1\b[^>]{0,300}>(.{0,1000}?)</h1\s*>|<title\b[^>]{0,300}>(.{0,1000}?)</title\s*>|"
                       rb"<meta\s[^>]{0,300}?property=[\"']og:title[\"'][^>]{0,300}?content=[\"']([^\"']{0,1000})",
                       re.IGNORECASE | re.DOTALL)
# Headlines sit in the head and at the top of the body; bounded repeats keep hostile markup linear.
_HEADLINE_SCAN = 256 * 1024
_MARKUP = re.compile(r"<[^>]*>")
_WORDS = re.compile(r"\w+")
_CONSENT_URL = re.compile(r"(?:^|[./-])(?:consent|privacy-?gate|cookie-?wall|gdpr)(?:[./-]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Extraction:
    """The main text of a page (plain, folded, capped), or why there is none; ``outcome`` is a metric label."""

    outcome: str
    text: str = ""


def is_html(headers: Mapping[str, str], body: bytes) -> bool:
    """True when the server says HTML, or says nothing and the body starts like HTML."""
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "").split(";")[0].strip().lower()
    if ctype:
        return ctype in _HTML_TYPES
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def consent_url(url: str) -> bool:
    """True when a URL (where the redirects ended) is a consent or cookie gate rather than an article."""
    parts = urlsplit(url)
    return bool(_CONSENT_URL.search(parts.hostname or "") or _CONSENT_URL.search(parts.path))


def main_text(body: bytes, url: str | None) -> str:
    """Trafilatura's main text of an HTML page (comments and tables left out), or ''."""
    # Not deduplicate=True: its cache is process-wide, so a page read a second time would come back empty.
    try:
        text = trafilatura.extract(body, url=url, include_comments=False, include_tables=False, favor_precision=True)
    except Exception:  # noqa: BLE001 - a parser failure on hostile markup is an empty page, not a crash
        return ""
    return text or ""


def folded(text: str) -> str:
    """Lower-cased words of ``text`` joined by single spaces (for comparing headlines)."""
    return " ".join(_WORDS.findall(text.casefold()))


def headlines(body: bytes) -> list[str]:
    """The page's headline candidates (``<h1>``, ``<title>``, ``og:title``), folded."""
    out = []
    for m in _HEADLINE.finditer(body[:_HEADLINE_SCAN]):
        raw = next(g for g in m.groups() if g is not None).decode("utf-8", "replace")
        got = folded(html.unescape(_MARKUP.sub(" ", raw)))
        if got:
            out.append(got)
    return out


def without_headline(text: str, candidates: Iterable[str]) -> str:
    """``text`` less its first line when that line is one of the headlines.

    A ``<title>`` usually carries the site's name after the headline ("Bridge to close - Local News"), so a
    first line that starts one (at least three words of it) counts too.
    """
    first, sep, rest = text.partition("\n")
    line = folded(first)
    if not sep or not line:
        return text
    for h in candidates:
        if line == h or (line.count(" ") >= 2 and h.startswith(line + " ")):
            return rest.lstrip("\n")
    return text


def extract(body: bytes, headers: Mapping[str, str], url: str, *, min_chars: int, max_chars: int) -> Extraction:
    """Classify a fetched page and take its main text; see the module docstring."""
    if consent_url(url):
        return Extraction("consent")
    if not is_html(headers, body):
        return Extraction("not_html")
    text = plain_text(without_headline(main_text(body, url), headlines(body)), max_chars) if max_chars else ""
    if len(text) >= min_chars and text:
        return Extraction("ok", text)
    if _PAYWALL.search(body):
        return Extraction("paywall")
    if _CONSENT.search(body):
        return Extraction("consent")
    if _COOKIE.search(body):
        return Extraction("cookie_wall")
    return Extraction("empty")
