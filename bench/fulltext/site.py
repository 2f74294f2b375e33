"""A local news site on 127.0.0.1 for the full-text tests and benchmark: article pages and every way they fail.

Each path answers from :attr:`Site.routes` (a :class:`Route`: status, headers, body, delay before answering).
:func:`standard_routes` sets up the cases ingest must survive: a real article, a paywall teaser, a cookie
wall, a consent redirect, a huge page, a slow page, a PDF, a redirect to a private address, a page with no
main text, a path robots.txt disallows, a page with an ETag and one with a Last-Modified (each answers 304
to its validator). The server counts hits per path, notes when each request came in, and the most requests
it ever had in flight at once.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HTML = {"Content-Type": "text/html; charset=utf-8"}
ROBOTS = "User-agent: *\nDisallow: /private/\n\nUser-agent: BadBot\nDisallow: /\n"
ARTICLE_TEXT = (
    "The city council voted on Tuesday to close the old harbour bridge to traffic after engineers found cracks "
    "in two of its supporting piers. The mayor said the closure would last at least six months while repairs are "
    "carried out, and that buses would be diverted over the northern crossing.\n\n"
    "Residents who rely on the bridge to reach the hospital said they feared longer journeys. The council's "
    "transport chief promised a shuttle service for patients and said the cost of repairs, estimated at four "
    "million pounds, would be met from the regional infrastructure fund.\n\n"
    "Engineers first raised concerns about the piers in a routine inspection last spring. A second survey in "
    "September confirmed that water had seeped into the concrete and corroded the steel inside it."
)


@dataclass
class Route:
    """One path's answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: dict(HTML))
    delay_s: float = 0.0


def article_page(title: str, text: str, *, extra: str = "", head: str = "") -> bytes:
    """A news page: navigation, the article's paragraphs, related links and a footer (boilerplate to skip)."""
    paras = "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n") if p.strip())
    nav = "".join(f'<li><a href="/section/{s}">{s.title()}</a></li>' for s in ("world", "business", "sport", "tech"))
    related = "".join(f'<li><a href="/news/related-{i}">Related story {i} you may like</a></li>' for i in range(6))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)} - Local News"
            f"</title>{head}</head><body><header><nav><ul>{nav}</ul></nav></header><main><article>"
            f"<h1>{html.escape(title)}</h1><p class='byline'>By Staff Reporter</p>{paras}</article>{extra}"
            f"<aside><h2>Related</h2><ul>{related}</ul></aside></main><footer><p>Copyright Local News. All rights "
            f"reserved.</p><a href='/terms'>Terms</a> <a href='/privacy'>Privacy</a></footer></body></html>").encode()


def standard_routes() -> dict[str, Route]:
    """The failure cases (and one good page) described in the module docstring."""
    teaser = "The council voted on Tuesday to close the old harbour bridge."
    paywall = article_page("Bridge to close", teaser, extra="<div class='paywall'>Subscribe to continue reading. "
                           "Already a subscriber? Log in.</div>",
                           head='<script type="application/ld+json">{"@type": "NewsArticle", '
                                '"isAccessibleForFree": "False"}</script>')
    cookie = (b"<!DOCTYPE html><html><head><title>Local News</title></head><body><div class='cookiebanner'>"
              b"<p>We use cookies to improve your experience.</p><button>Accept all cookies</button>"
              b"<button>Settings</button></div></body></html>")
    consent = (b"<!DOCTYPE html><html><head><title>Before you continue</title></head><body><form action='/consent'>"
               b"<p>Before you continue, we and our partners need your consent.</p><button>I agree</button>"
               b"</form></body></html>")
    empty = (b"<!DOCTYPE html><html><head><title>Local News</title></head><body><nav><a href='/'>Home</a>"
             b"<a href='/world'>World</a></nav><div id='app'></div><script>render()</script></body></html>")
    huge = article_page("Huge", ARTICLE_TEXT + "\n" + ("Filler paragraph of the huge page. " * 40 + "\n") * 4000)
    return {
        "/robots.txt": Route(body=ROBOTS.encode(), headers={"Content-Type": "text/plain"}),
        "/news/ok": Route(body=article_page("Harbour bridge to close for six months", ARTICLE_TEXT)),
        "/news/etag": Route(body=article_page("Harbour bridge to close", ARTICLE_TEXT),
                            headers=HTML | {"ETag": '"p1"'}),
        "/news/dated": Route(body=article_page("Harbour bridge to close", ARTICLE_TEXT),
                             headers=HTML | {"Last-Modified": "Tue, 30 Apr 2024 08:00:00 GMT"}),
        "/news/paywall": Route(body=paywall),
        "/news/cookie": Route(body=cookie),
        "/news/consent": Route(302, headers={"Location": "/consent?continue=/news/consent"}),
        "/consent": Route(body=consent),
        "/news/huge": Route(body=huge),
        "/news/slow": Route(body=article_page("Slow", ARTICLE_TEXT), delay_s=3.0),
        "/news/pdf": Route(body=b"%PDF-1.4 not a web page", headers={"Content-Type": "application/pdf"}),
        "/news/private": Route(302, headers={"Location": "http://10.11.12.13/internal"}),
        "/news/empty": Route(body=empty),
        "/private/secret": Route(body=article_page("Secret", ARTICLE_TEXT)),
    }


class Site:
    """The server; ``routes`` may be changed while it runs."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = routes or {}
        self.hits: dict[str, int] = {}
        self.requests: list[dict[str, str]] = []
        self.started: list[tuple[str, float]] = []
        """(path, time.monotonic()) of each request as it came in."""
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        site = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                site._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        """An absolute URL on this site."""
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Site:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            self.requests.append({"path": path} | {k: v for k, v in h.headers.items()})
            self.started.append((path, time.monotonic()))
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            route = self.routes.get(path) or Route(404, b"not found", {"Content-Type": "text/plain"})
            if route.delay_s:
                time.sleep(route.delay_s)
            etag, modified = route.headers.get("ETag"), route.headers.get("Last-Modified")
            status, body = route.status, route.body
            if (etag and h.headers.get("If-None-Match") == etag) or (
                    modified and h.headers.get("If-Modified-Since") == modified):
                status, body = 304, b""
            h.send_response(status)
            for k, v in route.headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                self.inflight -= 1
