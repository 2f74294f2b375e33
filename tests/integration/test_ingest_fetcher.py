"""The fetcher against a real HTTP server on 127.0.0.1: each hostile or odd answer gets its outcome, bounded."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from email.utils import formatdate

from ingest_server import (
    Conditional,
    FeedServer,
    deflated,
    gzip_bomb,
    gzipped,
    huge,
    redirect,
    respond,
    rss,
    static,
    trickle,
)

from ingest.fetcher import Conditional as Validators
from ingest.fetcher import HttpFetcher, Outcome
from wirewatch.retryafter import retry_after
from wirewatch.settings import IngestSettings

BODY = rss([{"title": "One", "link": "https://example.com/1", "guid": "1"}])


NO_VALIDATORS = Validators()


def fetch(url: str, validators: Validators = NO_VALIDATORS, allow: tuple[str, ...] = ("127.0.0.1",),
          **cfg: object) -> object:
    async def go() -> object:
        f = HttpFetcher(IngestSettings(**cfg), allow=allow)  # type: ignore[arg-type]
        try:
            return await f.fetch(url, validators)
        finally:
            await f.aclose()
    return asyncio.run(go())


def test_conditional_get_echoes_validators_exactly_and_gets_304(server: FeedServer) -> None:
    odd_date = "Tue, 15 Nov 1994 12:45:26 GMT"
    feed = Conditional(BODY, etag='W/"abc-123"', last_modified=odd_date)
    server.routes["/f"] = feed
    first = fetch(server.url("/f"))
    assert first.outcome is Outcome.OK and first.body == BODY
    assert first.etag == 'W/"abc-123"' and first.last_modified == odd_date
    second = fetch(server.url("/f"), Validators(first.etag, first.last_modified))
    assert second.outcome is Outcome.NOT_MODIFIED and second.body == b""
    sent = server.hits("/f")[-1]
    assert sent["If-None-Match"] == 'W/"abc-123"'
    assert sent["If-Modified-Since"] == odd_date
    assert sent["User-Agent"].startswith("Wirewatch/")
    assert feed.hits_304 == 1


def test_conditional_polls_redirects_and_error_pages_reuse_one_connection(server: FeedServer) -> None:
    """A 304, a redirect or a short error page is read to its end, so its connection goes back to the pool;
    a long error page is left unread and its connection closed (the next request opens another)."""
    server.routes["/f"] = Conditional(BODY, etag='"v1"')
    server.routes["/moved"] = redirect("/f", 302)
    server.routes["/missing"] = static(b"x" * 2000, 404)
    server.routes["/broken"] = static(b"y" * 200_000, 500)

    async def go() -> list[Outcome]:
        f = HttpFetcher(IngestSettings(), allow=("127.0.0.1",))
        try:
            first = await f.fetch(server.url("/f"))
            seen = [first.outcome]
            for path in ("/f", "/f", "/moved", "/missing", "/f"):
                seen.append((await f.fetch(server.url(path), Validators(first.etag))).outcome)
            seen.append((await f.fetch(server.url("/broken"))).outcome)
            seen.append((await f.fetch(server.url("/f"), Validators(first.etag))).outcome)
            return seen
        finally:
            await f.aclose()

    seen = asyncio.run(go())
    assert seen == [Outcome.OK] + [Outcome.NOT_MODIFIED] * 3 + [Outcome.CLIENT_ERROR, Outcome.NOT_MODIFIED,
                                                                Outcome.SERVER_ERROR, Outcome.NOT_MODIFIED]
    assert len(server.peers) == 9  # the redirect is two requests
    assert len(set(server.peers[:8])) == 1, "every poll up to the long error page used the first connection"
    assert server.peers[8] != server.peers[7], "the long error page's connection was closed, not reused"


def test_an_error_page_that_trickles_is_still_its_status_and_answers_at_once(server: FeedServer) -> None:
    """The fetcher drains an error page only to reuse its connection: a slow one is dropped after
    ``DISCARD_S`` and the fetch still ends as the status said, long before the fetch deadline."""
    server.routes["/slow-500"] = trickle(b"Internal error, please wait" * 10, per_byte_s=0.2, status=500)
    started = time.monotonic()
    r = fetch(server.url("/slow-500"), fetch_timeout_s=20.0)
    assert r.outcome is Outcome.SERVER_ERROR and r.status == 500
    assert time.monotonic() - started < 5.0


def test_429_and_503_retry_after_are_reported(server: FeedServer) -> None:
    server.routes["/busy"] = static(b"slow down", 429, {"Retry-After": "120"})
    when = formatdate(time.time() + 600, usegmt=True)
    server.routes["/down"] = static(b"", 503, {"Retry-After": when})
    r = fetch(server.url("/busy"))
    assert r.outcome is Outcome.RATE_LIMITED and r.retry_after_s == 120
    r = fetch(server.url("/down"))
    assert r.outcome is Outcome.SERVER_ERROR and r.status == 503
    assert r.retry_after_s is not None and 590 <= r.retry_after_s <= 601
    assert retry_after("garbage") is None


def test_permanent_redirects_report_the_new_url_temporary_ones_do_not(server: FeedServer) -> None:
    server.routes["/old"] = redirect("/mid", 301)
    server.routes["/mid"] = redirect(server.url("/new"), 308)
    server.routes["/new"] = static(BODY)
    server.routes["/tmp"] = redirect("/new", 302)
    r = fetch(server.url("/old"))
    assert r.outcome is Outcome.OK and r.moved_to == server.url("/new") and r.url == server.url("/new")
    r = fetch(server.url("/tmp"))
    assert r.outcome is Outcome.OK and r.moved_to is None


def test_redirect_loop_and_too_many_hops_stop(server: FeedServer) -> None:
    server.routes["/a"] = redirect("/b")
    server.routes["/b"] = redirect("/a")
    for i in range(7):
        server.routes[f"/hop{i}"] = redirect(f"/hop{i + 1}", 302)
    server.routes["/hop7"] = static(BODY)
    r = fetch(server.url("/a"))
    assert r.outcome is Outcome.TOO_MANY_REDIRECTS and "loop" in r.error
    r = fetch(server.url("/hop0"))
    assert r.outcome is Outcome.TOO_MANY_REDIRECTS and "more than 5" in r.error
    assert len(server.hits("/a")) == 1


def test_only_http_and_https_are_fetched(server: FeedServer) -> None:
    server.routes["/to-file"] = redirect("file:///etc/passwd")
    assert fetch("file:///etc/passwd").outcome is Outcome.BAD_URL
    assert fetch("/etc/passwd").outcome is Outcome.BAD_URL
    assert fetch("ftp://example.com/feed").outcome is Outcome.BAD_URL
    r = fetch(server.url("/to-file"))
    assert r.outcome is Outcome.BAD_URL and "file" in r.error


def test_410_is_gone_and_other_statuses_are_classified(server: FeedServer) -> None:
    server.routes["/gone"] = static(b"", 410)
    server.routes["/err"] = static(b"", 500)
    assert fetch(server.url("/gone")).outcome is Outcome.GONE
    assert fetch(server.url("/missing")).outcome is Outcome.CLIENT_ERROR
    assert fetch(server.url("/err")).outcome is Outcome.SERVER_ERROR


def test_gzip_and_both_deflate_flavours_are_decoded(server: FeedServer) -> None:
    server.routes["/gz"] = gzipped(BODY)
    server.routes["/zlib"] = deflated(BODY)
    server.routes["/raw"] = deflated(BODY, raw=True)
    for path in ("/gz", "/zlib", "/raw"):
        r = fetch(server.url(path))
        assert r.outcome is Outcome.OK and r.body == BODY, path


def test_50_mib_body_is_cut_at_the_byte_cap(server: FeedServer) -> None:
    server.routes["/big"] = huge(50 << 20)
    server.routes["/big-chunked"] = huge(50 << 20, chunked=True)
    r = fetch(server.url("/big"))
    assert r.outcome is Outcome.TOO_LARGE and "Content-Length" in r.error
    tracemalloc.start()
    try:
        r = fetch(server.url("/big-chunked"), max_bytes=8 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.outcome is Outcome.TOO_LARGE
    assert peak < 24 << 20, f"peak {peak >> 20} MiB while the cap is 8 MiB"


def test_gzip_bomb_stops_at_the_decompressed_cap_with_bounded_memory(server: FeedServer) -> None:
    handler, size = gzip_bomb(200 << 20)
    assert size < 400_000  # ~200 KB on the wire
    server.routes["/bomb"] = handler
    tracemalloc.start()
    try:
        r = fetch(server.url("/bomb"), max_decompressed_bytes=16 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.outcome is Outcome.TOO_LARGE and "decompressed" in r.error
    # Output is counted, not kept, until the body is known to fit: the bomb costs its ~200 KB and one 1 MiB
    # step (with the server's copy in this process too), not the 16 MiB cap (it took 3x the cap when kept).
    assert peak < 4 << 20, f"peak {peak / (1 << 20):.1f} MiB for a refused bomb (cap 16 MiB)"


def test_server_sending_one_byte_a_second_is_cut_at_the_total_deadline(server: FeedServer) -> None:
    server.routes["/slow"] = trickle(BODY, 1.0)
    started = time.monotonic()
    r = fetch(server.url("/slow"), fetch_timeout_s=2.0, read_timeout_s=5.0)
    took = time.monotonic() - started
    assert r.outcome is Outcome.TIMEOUT
    assert took < 4.0


def test_connection_refused_is_a_network_error() -> None:
    from wirewatch.stack import free_port

    r = fetch(f"http://127.0.0.1:{free_port()}/feed")
    assert r.outcome is Outcome.NETWORK and r.error


def test_unsupported_content_encoding_is_refused(server: FeedServer) -> None:
    server.routes["/br"] = lambda h: respond(h, 200, b"\x0b\x02\x80", {"Content-Encoding": "br"})
    r = fetch(server.url("/br"))
    assert r.outcome is Outcome.BAD_ENCODING


def test_private_addresses_are_refused_unless_allowed(server: FeedServer) -> None:
    """The SSRF guard: loopback is refused without an allow-list entry, also when reached by a redirect."""
    server.routes["/f"] = static(BODY)
    r = fetch(server.url("/f"), allow=())
    assert r.outcome is Outcome.BAD_URL and "refused" in r.error
    assert not server.hits("/f")
    r = fetch("http://169.254.169.254/latest/meta-data/", allow=())
    assert r.outcome is Outcome.BAD_URL
