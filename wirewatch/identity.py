"""Article identity: the canonical URL and the one function every dedup key derives from."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

# Parameters that only say where a click came from; removing them never changes the page served.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "mc_cid", "mc_eid", "igshid", "yclid",
        "_hsenc", "_hsmi", "mkt_tok", "ocid", "cmpid", "icid", "ncid", "ito", "spm", "ref_src", "ref_url",
        "guccounter", "guce_referrer", "guce_referrer_sig", "__twitter_impression", "s_cid", "soc_src",
        "soc_trk", "sr_share", "at_medium", "at_campaign", "at_custom1", "at_custom2", "at_custom3",
        "at_custom4", "rss", "feedtype", "cmp", "CMP",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "oly_", "vero_", "at_")
DEFAULT_PORTS = {"http": 80, "https": 443}
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def canonical_url(url: str) -> str:
    """Return the canonical form of an http(s) URL.

    Scheme and host are lower-cased, the default port, the fragment, tracking parameters (``utm_*``,
    ``fbclid``, ``gclid``, ...) and a trailing ``?`` are dropped, percent-encoding is normalized, and the
    remaining query parameters keep their order. An empty path becomes ``/``. The function is idempotent.

    Raises:
        ValueError: when ``url`` is not an absolute http or https URL.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"URL has no host: {url[:200]!r}")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host.lower()
    except UnicodeError:
        host = host.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"URL has an invalid port: {url[:200]!r}") from exc
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = quote(unquote(parts.path), safe=_SAFE_PATH) or "/"
    query_pairs = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)
    ]
    query = urlencode(query_pairs, doseq=True, quote_via=quote)
    return urlunsplit((scheme, netloc, path, query, ""))


def identity_url(url: str) -> str:
    """The canonical URL with the scheme folded to https, so an http/https flip keeps one identity."""
    canon = canonical_url(url)
    return "https" + canon[canon.index(":"):]


_WS = re.compile(r"\s+")


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def article_id(
    *,
    url: str | None,
    feed_url: str,
    guid: str | None = None,
    title: str | None = None,
    published: str | None = None,
) -> str:
    """The stable identity of an article.

    The canonical URL (scheme-folded) when the entry has a usable http(s) link; else the feed URL plus the
    GUID; else the feed URL plus the whitespace-folded title and the date string. Returns 32 hex chars.

    Raises:
        ValueError: when the entry has no link, no GUID and no title, so nothing could identify it.
    """
    if url:
        try:
            return _digest("url", identity_url(url))
        except ValueError:
            pass
    feed = canonical_url(feed_url) if feed_url.startswith(("http://", "https://")) else feed_url
    if guid and guid.strip():
        return _digest("guid", feed, guid.strip())
    if title and title.strip():
        return _digest("title", feed, _WS.sub(" ", title).strip().lower(), (published or "").strip())
    raise ValueError("entry has no link, GUID or title to identify it")


def feed_id(url: str) -> str:
    """The stable identity of a feed: a short hash of its canonical URL (or of the raw string if not http)."""
    try:
        canon = canonical_url(url)
    except ValueError:
        canon = url.strip()
    return _digest("feed", canon)[:16]
