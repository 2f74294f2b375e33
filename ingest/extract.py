"""An article page's main text, with trafilatura, and what went wrong when there is none worth having.

:func:`extract` never raises: a page that is not HTML, a consent or cookie wall, a paywall teaser or a page
with no main text comes back as an :class:`Extraction` whose ``outcome`` says so and whose ``text`` is empty.
The gates are told apart by markers on the page once the main text is found short, so an article that merely
mentions cookies or subscriptions keeps its text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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


def extract(body: bytes, headers: Mapping[str, str], url: str, *, min_chars: int, max_chars: int) -> Extraction:
    """Classify a fetched page and take its main text; see the module docstring."""
    if consent_url(url):
        return Extraction("consent")
    if not is_html(headers, body):
        return Extraction("not_html")
    text = plain_text(main_text(body, url), max_chars) if max_chars else ""
    if len(text) >= min_chars and text:
        return Extraction("ok", text)
    if _PAYWALL.search(body):
        return Extraction("paywall")
    if _CONSENT.search(body):
        return Extraction("consent")
    if _COOKIE.search(body):
        return Extraction("cookie_wall")
    return Extraction("empty")
