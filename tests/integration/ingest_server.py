"""A real HTTP server on 127.0.0.1 for the ingest tests: each path answers with a small handler function.

Handlers get the request handler object (path, headers) and write a complete response. The server records
every request (path and headers) so tests can check what the fetcher sent, e.g. the exact validators.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]


def respond(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    hdrs = {"Content-Type": "application/rss+xml; charset=utf-8"} | (headers or {})
    for k, v in hdrs.items():
        h.send_header(k, v)
    if "Content-Length" not in hdrs:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if body and h.command != "HEAD":
        h.wfile.write(body)


def rss(items: list[dict[str, str]], title: str = "Test feed") -> bytes:
    parts = [f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>{title}</title>']
    for it in items:
        parts.append("<item>")
        for tag in ("title", "link", "guid", "description", "pubDate"):
            if tag in it:
                parts.append(f"<{tag}>{it[tag]}</{tag}>")
        parts.append("</item>")
    parts.append("</channel></rss>\n")
    return "".join(parts).encode()


class Conditional:
    """A feed that honours If-None-Match / If-Modified-Since (exact echo required) and can change."""

    def __init__(self, body: bytes, etag: str = '"v1"', last_modified: str | None = None) -> None:
        self.body = body
        self.etag = etag
        self.last_modified = last_modified or formatdate(1_600_000_000, usegmt=True)
        self.hits_200 = 0
        self.hits_304 = 0

    def set(self, body: bytes, etag: str, last_modified: str | None = None) -> None:
        self.body, self.etag = body, etag
        self.last_modified = last_modified or formatdate(time.time(), usegmt=True)

    def __call__(self, h: BaseHTTPRequestHandler) -> None:
        inm = h.headers.get("If-None-Match")
        ims = h.headers.get("If-Modified-Since")
        if (inm is not None and inm == self.etag) or (inm is None and ims == self.last_modified):
            self.hits_304 += 1
            respond(h, 304, headers={"ETag": self.etag})
            return
        self.hits_200 += 1
        respond(h, 200, self.body, {"ETag": self.etag, "Last-Modified": self.last_modified})


def static(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    return lambda h: respond(h, status, body, headers)


def redirect(location: str, status: int = 301) -> Handler:
    return lambda h: respond(h, status, b"", {"Location": location})


def gzipped(body: bytes) -> Handler:
    return lambda h: respond(h, 200, gzip.compress(body), {"Content-Encoding": "gzip"})


def deflated(body: bytes, raw: bool = False) -> Handler:
    def go(h: BaseHTTPRequestHandler) -> None:
        if raw:
            c = zlib.compressobj(wbits=-15)
            data = c.compress(body) + c.flush()
        else:
            data = zlib.compress(body)
        respond(h, 200, data, {"Content-Encoding": "deflate"})
    return go


def gzip_bomb(inflated: int) -> tuple[Handler, int]:
    """A gzip body that inflates to ``inflated`` bytes of zeros; returns the handler and its compressed size."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    parts = [c.compress(chunk) for _ in range(inflated >> 20)]
    parts.append(c.flush())
    data = b"".join(parts)
    return (lambda h: respond(h, 200, data, {"Content-Encoding": "gzip"})), len(data)


def huge(size: int, chunked: bool = False) -> Handler:
    """A body of ``size`` bytes, streamed in 1 MiB writes (with Content-Length unless ``chunked``)."""
    def go(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        if not chunked:
            h.send_header("Content-Length", str(size))
        h.end_headers()
        block = b"<!-- " + b"x" * ((1 << 20) - 10) + b" -->\n"
        sent = 0
        try:
            while sent < size:
                h.wfile.write(block[: size - sent])
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True
    return go


def trickle(body: bytes, per_byte_s: float = 1.0, status: int = 200) -> Handler:
    """Send ``body`` one byte every ``per_byte_s`` (a server that never quite answers)."""
    def go(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for i in range(len(body)):
                h.wfile.write(body[i:i + 1])
                h.wfile.flush()
                time.sleep(per_byte_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True
    return go


class FeedServer:
    """A threaded HTTP server on 127.0.0.1 and a free port; ``routes[path] = handler``."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.peers: list[int] = []  # the client port of each request: one per TCP connection used
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append((self.path, dict(self.headers.items())))
                server.peers.append(self.client_address[1])
                handler = server.routes.get(self.path.split("?", 1)[0])
                if handler is None:
                    respond(self, 404, b"not found", {"Content-Type": "text/plain"})
                else:
                    handler(self)

            def log_message(self, *args: Any) -> None:
                pass

        class _Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that hang up on purpose (caps, deadlines) are expected here

        self._httpd = _Server(("127.0.0.1", 0), _H)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p.split("?", 1)[0] == path]
