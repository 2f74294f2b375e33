"""The demo's webhook receiver on 127.0.0.1: accepts alert POSTs and hands each new one to a callback.

Repeats of an ``Idempotency-Key`` already received are acknowledged and counted, not passed on, as a
real receiver would do.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 4 * 1024 * 1024


@dataclass
class Received:
    """One accepted POST."""

    at: float
    path: str
    key: str
    body: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""


class WebhookReceiver:
    """Collects webhook deliveries; ``on_alert`` is called once per new idempotency key."""

    def __init__(self, on_alert: Callable[[Received], None] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.received: list[Received] = []
        self.repeats = 0
        self.invalid = 0
        self._keys: set[str] = set()
        self._on_alert = on_alert
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="demo-receiver", daemon=True)

    @property
    def url(self) -> str:
        """Where to POST alerts."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/alerts"

    def start(self) -> WebhookReceiver:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def _accept(self, path: str, key: str, raw: bytes) -> int:
        try:
            body = json.loads(raw) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            with self._lock:
                self.invalid += 1
            return 400
        if not isinstance(body, dict):
            body = {"value": body}
        key = key or str(body.get("idempotency_key") or "")
        with self._lock:
            if key and key in self._keys:
                self.repeats += 1
                return 200
            if key:
                self._keys.add(key)
            item = Received(time.time(), path, key, body, raw)
            self.received.append(item)
        if self._on_alert is not None:
            self._on_alert(item)
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as Slack's, Teams' or any production endpoint: the alerts worker pools its
            # connections, and a receiver that closes each one would cost every alert a TCP handshake.
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self.close_connection = True  # the unread rest would be taken for the next request
                    status = 413
                else:
                    raw = self.rfile.read(length)
                    status = receiver._accept(self.path, self.headers.get("Idempotency-Key", ""), raw)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()

        return Handler


def describe(payload: dict[str, Any]) -> str:
    """One or two lines for a terminal: kind, topic, heading, sources."""
    kind = str(payload.get("kind") or "alert").upper()
    topic = payload.get("topic_name") or payload.get("topic_id") or "?"
    heading = payload.get("heading") or _first_title(payload) or "(no heading)"
    sources = [str(s) for s in payload.get("sources") or []]
    count = payload.get("article_count") or len(payload.get("items") or []) or 1
    line = f"{kind} [{topic}] {heading}"
    src = ", ".join(sources) if sources else "?"
    return f"{line}\n      {count} article(s) from {len(sources)} source(s): {src}"


def _first_title(payload: dict[str, Any]) -> str:
    items = payload.get("items") or []
    if items and isinstance(items[0], dict):
        return str(items[0].get("title") or "")
    return ""
