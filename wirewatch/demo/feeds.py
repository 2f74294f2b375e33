"""The demo's feed server: the bundled sample articles as RSS feeds on 127.0.0.1, released over time.

``GET /feeds/<outlet>.xml`` returns the outlet's items whose release time has come (newest first), with an
ETag so a conditional GET gets 304 until something new appears; ``GET /feeds/broken.xml`` returns the
malformed feed; ``GET /articles/<outlet>/<slug>`` a small page per article; ``GET /`` lists the feeds.
"""

from __future__ import annotations

import hashlib
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from xml.sax.saxutils import escape

BROKEN = "broken"


@dataclass(frozen=True)
class Item:
    """One sample article."""

    outlet: str
    at: float
    expect: str
    slug: str
    title: str
    summary: str


@dataclass(frozen=True)
class Outlet:
    """One sample publisher (one feed)."""

    slug: str
    name: str


def data_text(name: str) -> str:
    """A file of the bundled demo data."""
    return resources.files("wirewatch.demo").joinpath("data", name).read_text(encoding="utf-8")


def load_samples() -> tuple[list[Outlet], list[Item]]:
    """The bundled outlets and items, items in release order."""
    raw = tomllib.loads(data_text("articles.toml"))
    outlets = [Outlet(o["slug"], o["name"]) for o in raw["outlet"]]
    items = sorted((Item(**i) for i in raw["item"]), key=lambda i: i.at)
    return outlets, items


class FeedServer:
    """Serves the sample feeds; ``speed`` > 1 releases items faster (``at / speed`` seconds after start)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, speed: float = 1.0) -> None:
        self.outlets, self.items = load_samples()
        self.speed = speed
        self.started = time.time()
        self.requests = 0
        self.served_items: set[str] = set()
        self.not_modified = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="demo-feeds", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def feed_urls(self) -> dict[str, str]:
        """Outlet name to feed URL, the malformed feed included."""
        out = {o.name: f"{self.base_url}/feeds/{o.slug}.xml" for o in self.outlets}
        out["Broken Bulletin"] = f"{self.base_url}/feeds/{BROKEN}.xml"
        return out

    def start(self) -> FeedServer:
        """Serve in a background thread; the release clock starts now."""
        self.started = time.time()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def released(self, outlet: str, now: float | None = None) -> list[Item]:
        """The outlet's items released by ``now``, newest first."""
        elapsed = (now or time.time()) - self.started
        return [i for i in reversed(self.items) if i.outlet == outlet and i.at / self.speed <= elapsed]

    def duration_s(self) -> float:
        """Seconds until the last item is released."""
        return max(i.at for i in self.items) / self.speed

    def _published(self, item: Item) -> datetime:
        return datetime.fromtimestamp(self.started + item.at / self.speed, UTC)

    def link(self, item: Item) -> str:
        """The article's URL on this server."""
        return f"{self.base_url}/articles/{item.outlet}/{item.slug}"

    def rss(self, outlet: Outlet, items: list[Item]) -> bytes:
        """An RSS 2.0 document of ``items``."""
        entries = "".join(
            f"<item><title>{escape(i.title)}</title><link>{escape(self.link(i))}</link>"
            f"<guid isPermaLink=\"true\">{escape(self.link(i))}</guid>"
            f"<description>{escape(i.summary)}</description>"
            f"<pubDate>{format_datetime(self._published(i))}</pubDate></item>"
            for i in items
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            f"<title>{escape(outlet.name)}</title><link>{self.base_url}/</link>"
            f"<description>{escape(outlet.name)} (Wirewatch demo)</description><language>en</language>"
            f"{entries}</channel></rss>"
        ).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                with server._lock:
                    server.requests += 1
                path = self.path.split("?", 1)[0]
                if path == "/":
                    links = "".join(f'<li><a href="{u}">{escape(n)}</a></li>' for n, u in server.feed_urls().items())
                    self._send(200, f"<h1>Wirewatch demo feeds</h1><ul>{links}</ul>".encode(), "text/html")
                elif path == f"/feeds/{BROKEN}.xml":
                    self._send(200, data_text("broken-feed.xml").encode(), "application/rss+xml")
                elif path.startswith("/feeds/") and path.endswith(".xml"):
                    self._feed(path.removeprefix("/feeds/").removesuffix(".xml"))
                elif path.startswith("/articles/"):
                    self._article(path.removeprefix("/articles/"))
                else:
                    self._send(404, b"not found", "text/plain")

            def _feed(self, slug: str) -> None:
                outlet = next((o for o in server.outlets if o.slug == slug), None)
                if outlet is None:
                    self._send(404, b"no such feed", "text/plain")
                    return
                items = server.released(slug)
                etag = '"' + hashlib.sha1(",".join(i.slug for i in items).encode()).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    with server._lock:
                        server.not_modified += 1
                    self._send(304, b"", "application/rss+xml", {"ETag": etag})
                    return
                with server._lock:
                    server.served_items.update(f"{i.outlet}/{i.slug}" for i in items)
                self._send(200, server.rss(outlet, items), "application/rss+xml; charset=utf-8",
                           {"ETag": etag, "Cache-Control": "max-age=1"})

            def _article(self, rest: str) -> None:
                outlet, _, slug = rest.partition("/")
                item = next((i for i in server.items if i.outlet == outlet and i.slug == slug), None)
                if item is None:
                    self._send(404, b"no such article", "text/plain")
                    return
                body = f"<h1>{escape(item.title)}</h1><p>{escape(item.summary)}</p>"
                self._send(200, body.encode(), "text/html; charset=utf-8")

        return Handler
