"""HTTP fetching done by us: conditional GET, redirects re-checked hop by hop, bounded time and bytes.

feedparser never touches the network; it gets the bytes and headers this module returns. Every limit is
enforced while the body streams in, so a hostile or broken server costs at most ``fetch_timeout_s`` of
wall time, ``max_bytes`` of transfer and ``max_decompressed_bytes`` of memory.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from wirewatch import netguard
from wirewatch.log import describe_error
from wirewatch.retryafter import retry_after
from wirewatch.settings import IngestSettings


class Outcome(StrEnum):
    """How a fetch ended; also the ``outcome`` label of the fetch metric."""

    OK = "200"
    NOT_MODIFIED = "304"
    GONE = "410"
    RATE_LIMITED = "429"
    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    NETWORK = "network_error"
    BAD_URL = "bad_url"
    TOO_MANY_REDIRECTS = "redirects"
    BAD_ENCODING = "bad_encoding"


@dataclass(frozen=True)
class Conditional:
    """Validators from the previous successful fetch, echoed back exactly as the server sent them."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """What one fetch produced. ``body`` is the decoded (decompressed) payload, empty unless OK."""

    outcome: Outcome
    url: str
    """The URL that answered last (after redirects)."""
    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    moved_to: str | None = None
    """Where every hop was a permanent redirect (301/308): the new URL to store."""
    retry_after_s: float | None = None
    elapsed_s: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        """True for a 200 with a body."""
        return self.outcome is Outcome.OK


class Fetcher(Protocol):
    """Fetches one feed URL.

    ``fetch`` never raises for anything the network or the server did: timeouts, refused connections,
    oversized or undecodable bodies, bad redirects and error statuses all come back as a
    :class:`FetchResult` with the matching :class:`Outcome` and a one-line ``error``.
    """

    async def fetch(self, url: str, conditional: Conditional = Conditional()) -> FetchResult:
        """Fetch ``url`` (conditionally when validators are given). See the class docstring."""
        ...


class TooLarge(Exception):
    """A body past the byte or decompressed-byte cap."""


class BadEncoding(Exception):
    """A body whose Content-Encoding we cannot or would not decode."""


# Output is produced in steps of this size, so one step never allocates much more than this.
_INFLATE_STEP = 1 << 20


class _Inflater:
    """Streaming gzip/deflate with a cap on the output: a bomb stops at the cap, not at the end of memory.

    The output is counted, not kept, while the body streams in (``keep=False``): a body found over the cap
    has cost only its compressed bytes and one step, never the cap itself. :func:`inflate` then decodes the
    compressed bytes a second time, keeping the output, once they are known to fit.
    """

    def __init__(self, encoding: str, cap: int, keep: bool = False) -> None:
        self._encoding = encoding
        self._cap = cap
        self._out = 0
        self._keep = keep
        self.parts: list[bytes] = []
        # 47 = auto-detect zlib or gzip header; deflate may also come raw (no zlib header), tried on error.
        self._obj = zlib.decompressobj(47 if encoding == "gzip" else 15)
        self._started = False

    def feed(self, chunk: bytes) -> None:
        """Decode ``chunk``. Raises TooLarge past the cap, zlib.error on a corrupt stream."""
        try:
            self._drain(chunk)
        except zlib.error:
            if self._started or self._encoding != "deflate":
                raise
            self._obj = zlib.decompressobj(-15)
            self._drain(chunk)
        self._started = True
        # Concatenated gzip members (allowed by RFC 1952) continue after the first one's end.
        while self._obj.eof and self._obj.unused_data and self._encoding == "gzip":
            rest = self._obj.unused_data
            self._obj = zlib.decompressobj(47)
            self._drain(rest)

    def _drain(self, data: bytes) -> None:
        while data:
            out = self._obj.decompress(data, min(_INFLATE_STEP, self._cap - self._out + 1))
            self._out += len(out)
            if self._out > self._cap:
                raise TooLarge(f"decompressed body over {self._cap} bytes")
            if self._keep and out:
                self.parts.append(out)
            self._started = self._started or bool(out)
            data = self._obj.unconsumed_tail
            if not out and data:
                break  # no progress: the stream needs more input than this chunk holds

    def flush(self) -> None:
        """Decode what the stream still holds at the end of the body."""
        tail = self._obj.flush()
        self._out += len(tail)
        if self._out > self._cap:
            raise TooLarge(f"decompressed body over {self._cap} bytes")
        if self._keep and tail:
            self.parts.append(tail)


def inflate(encoding: str, chunks: Iterable[bytes], cap: int) -> bytes:
    """The decoded body of compressed ``chunks``. Raises TooLarge past ``cap``, zlib.error when corrupt."""
    inflater = _Inflater(encoding, cap, keep=True)
    for chunk in chunks:
        inflater.feed(chunk)
    inflater.flush()
    return b"".join(inflater.parts)


def check_url(url: str) -> str | None:
    """Why ``url`` may not be fetched (only absolute http/https with a host), or None when it may."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http or https"
    if not parts.hostname:
        return "URL has no host"
    return None


class HttpFetcher:
    """The :class:`Fetcher` on httpx: one pooled async client, limits from :class:`IngestSettings`.

    Connections go through the SSRF guard (:func:`wirewatch.netguard.guarded_async_transport`): every hop's
    host is resolved and each address checked against ``allow`` (the operator's allow-list, usually
    ``settings.api.url_allowlist``), so a feed URL, or a redirect, that leads to a private, loopback or
    metadata address is refused as :attr:`Outcome.BAD_URL`. ``guard=False`` turns that off.
    """

    def __init__(self, cfg: IngestSettings, *, allow: Iterable[str] = (), guard: bool = True,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        timeout = httpx.Timeout(connect=cfg.connect_timeout_s, read=cfg.read_timeout_s,
                                write=cfg.read_timeout_s, pool=cfg.fetch_timeout_s)
        limits = httpx.Limits(max_connections=cfg.concurrency + 8, max_keepalive_connections=cfg.concurrency,
                              keepalive_expiry=30.0)
        if transport is None and guard:
            transport = netguard.guarded_async_transport(tuple(allow), limits=limits)
        self._client = httpx.AsyncClient(
            timeout=timeout, limits=limits, follow_redirects=False, transport=transport, trust_env=False,
            headers={"User-Agent": cfg.user_agent, "Accept-Encoding": "gzip, deflate",
                     "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
                               "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"},
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()

    async def fetch(self, url: str, conditional: Conditional = Conditional(), *, accept: str | None = None,
                    max_bytes: int | None = None, timeout_s: float | None = None) -> FetchResult:
        """See :class:`Fetcher`. The whole exchange, redirects included, ends by ``fetch_timeout_s``.

        Article pages and robots.txt come through here too, with their own ``accept`` header, a byte cap
        (``max_bytes`` on transfer and decoded size, each at most the feed caps) and a deadline.
        """
        started = time.monotonic()
        state = _Hops(url)
        deadline = timeout_s or self.cfg.fetch_timeout_s
        caps = _Caps(min(max_bytes or self.cfg.max_bytes, self.cfg.max_bytes),
                     min(max_bytes or self.cfg.max_decompressed_bytes, self.cfg.max_decompressed_bytes))
        try:
            async with asyncio.timeout(deadline):
                result = await self._follow(state, conditional, accept, caps)
        except TimeoutError:
            result = state.fail(Outcome.TIMEOUT, f"no complete answer within {deadline:g}s")
        except httpx.TimeoutException as exc:
            result = state.fail(Outcome.TIMEOUT, describe_error(exc)[:300])
        except TooLarge as exc:
            result = state.fail(Outcome.TOO_LARGE, str(exc))
        except (BadEncoding, zlib.error) as exc:
            result = state.fail(Outcome.BAD_ENCODING, f"cannot decode body: {exc}"[:300])
        except netguard.UnsafeURLError as exc:
            result = state.fail(Outcome.BAD_URL, f"refused: {exc}"[:300])
        except (httpx.HTTPError, OSError) as exc:
            result = state.fail(Outcome.NETWORK, describe_error(exc)[:300])
        return _with_elapsed(result, time.monotonic() - started)

    async def _follow(self, hops: _Hops, conditional: Conditional, accept: str | None, caps: _Caps) -> FetchResult:
        while True:
            reason = check_url(hops.url)
            if reason:
                return hops.fail(Outcome.BAD_URL, reason)
            headers = {"Accept": accept} if accept else {}
            if conditional.etag:
                headers["If-None-Match"] = conditional.etag
            if conditional.last_modified:
                headers["If-Modified-Since"] = conditional.last_modified
            async with self._client.stream("GET", hops.url, headers=headers) as resp:
                status = resp.status_code
                if status != 200:
                    await _discard(resp)
                if status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                    problem = hops.redirect(resp.headers["location"], status in (301, 308), self.cfg.max_redirects)
                    if problem:
                        return problem
                    continue
                if status == 200:
                    body = await self._read(resp, caps)
                    return hops.done(Outcome.OK, status, body, resp.headers)
                ra = retry_after(resp.headers.get("retry-after"))
                outcome = _status_outcome(status)
                return hops.done(outcome, status, b"", resp.headers, retry_after_s=ra,
                                 error="" if outcome is Outcome.NOT_MODIFIED else f"HTTP {status}")

    async def _read(self, resp: httpx.Response, caps: _Caps) -> bytes:
        enc = resp.headers.get("content-encoding", "identity").strip().lower()
        if enc in ("x-gzip",):
            enc = "gzip"
        if enc not in ("identity", "", "gzip", "deflate"):
            raise BadEncoding(f"unsupported Content-Encoding {enc!r}")
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > caps.transfer:
            raise TooLarge(f"Content-Length {declared} over the {caps.transfer}-byte cap")
        inflater = _Inflater(enc, caps.decoded) if enc in ("gzip", "deflate") else None
        received = 0
        parts: list[bytes] = []
        async for chunk in resp.aiter_raw():
            received += len(chunk)
            if received > caps.transfer:
                raise TooLarge(f"body over the {caps.transfer}-byte cap")
            if inflater:
                inflater.feed(chunk)
            parts.append(chunk)
        if inflater:
            inflater.flush()
            return inflate(enc, parts, caps.decoded)
        return b"".join(parts)


# A redirect's, 304's or error page's body is read (and dropped) up to this many bytes and seconds: httpcore
# puts a connection back in the pool only once its response has been read to the end, and a 304 left unread
# would cost every conditional poll a new TCP (and TLS) connection. A longer or slower body is left unread
# and its connection closed; the status is the answer either way.
DISCARD_BYTES = 64 * 1024
DISCARD_S = 1.0


async def _discard(resp: httpx.Response) -> None:
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DISCARD_BYTES:
        return
    received = 0
    try:
        async with asyncio.timeout(DISCARD_S):
            async for chunk in resp.aiter_raw():
                received += len(chunk)
                if received > DISCARD_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError, OSError):
        return


@dataclass(frozen=True)
class _Caps:
    transfer: int
    decoded: int


def _status_outcome(status: int) -> Outcome:
    if status == 304:
        return Outcome.NOT_MODIFIED
    if status == 410:
        return Outcome.GONE
    if status == 429:
        return Outcome.RATE_LIMITED
    if 500 <= status:
        return Outcome.SERVER_ERROR
    if 400 <= status:
        return Outcome.CLIENT_ERROR
    # 1xx/2xx other than 200, or a redirect without Location: nothing usable came back.
    return Outcome.CLIENT_ERROR


class _Hops:
    """Redirect bookkeeping for one fetch: visited URLs, hop count and whether every hop was permanent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.visited = {url}
        self.count = 0
        self.permanent = True

    def redirect(self, location: str, permanent: bool, limit: int) -> FetchResult | None:
        target = urljoin(self.url, location.strip())
        self.count += 1
        self.permanent = self.permanent and permanent
        if self.count > limit:
            return self.fail(Outcome.TOO_MANY_REDIRECTS, f"more than {limit} redirects")
        if target in self.visited:
            return self.fail(Outcome.TOO_MANY_REDIRECTS, f"redirect loop back to {target[:200]}")
        reason = check_url(target)
        if reason:
            return self.fail(Outcome.BAD_URL, f"redirect to a URL we do not fetch: {reason}")
        self.visited.add(target)
        self.url = target
        return None

    def done(self, outcome: Outcome, status: int, body: bytes, headers: Mapping[str, str], *,
             retry_after_s: float | None = None, error: str = "") -> FetchResult:
        moved = self.url if self.count and self.permanent and outcome in (Outcome.OK, Outcome.NOT_MODIFIED) else None
        return FetchResult(outcome, self.url, status, body, dict(headers.items()), headers.get("etag"),
                           headers.get("last-modified"), moved, retry_after_s, error=error)

    def fail(self, outcome: Outcome, error: str) -> FetchResult:
        return FetchResult(outcome, self.url, error=error)


def _with_elapsed(result: FetchResult, elapsed: float) -> FetchResult:
    return replace(result, elapsed_s=elapsed)
