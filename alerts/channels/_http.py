"""HTTP POST shared by the webhook-style channels: pooled keep-alive connections, statuses mapped to errors.

Built on the standard library's ``http.client`` rather than httpx: on this path a send costs ~0.4 ms of
CPU instead of ~1.1 ms (measured against the benchmark's local receiver), which is most of the alert
worker's budget per notification. Connections are kept per origin and reused; a reused connection that
the server had already closed is retried once on a fresh one (the request carries its idempotency key).
Redirects are not followed; proxies are not used. Every new connection resolves the target and checks each
address against the SSRF policy (:mod:`wirewatch.netguard`, with the operator's ``api.url_allowlist``),
then connects to the checked address itself, so a name re-pointed at the private network after the
subscription was registered (DNS rebinding) is refused at send time.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, ClassVar
from urllib.parse import urlsplit

from alerts.channels.base import Notification, PermanentSendError, RetryableSendError, target_label
from wirewatch import netguard
from wirewatch.records import ChannelSpec
from wirewatch.retryafter import retry_after
from wirewatch.settings import AlertsSettings

MAX_RETRY_AFTER_S = 3600.0
MAX_IDLE_PER_ORIGIN = 32
MAX_BODY = 64 * 1024
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Pool:
    """Idle keep-alive connections per origin, shared by every channel in the process.

    The idle lists are deques: ``append`` and ``pop`` are atomic, so taking and returning a connection
    needs no lock (dozens of send threads would otherwise queue on it).
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], deque[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()  # only for creating the TLS context
        self._tls: ssl.SSLContext | None = None
        self._allow = netguard.allowlist(())

    def configure(self, url_allowlist: tuple[str, ...]) -> None:
        """Set the operator's allow-list for the SSRF check on every new connection."""
        self._allow = netguard.allowlist(url_allowlist)

    def get(self, origin: tuple[str, str, int], timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to ``origin`` and whether it was reused."""
        idle = self._idle.get(origin)
        if idle:
            try:
                conn = idle.pop()
            except IndexError:  # another thread took the last one
                pass
            else:
                conn.timeout = timeout_s
                if conn.sock is not None:
                    conn.sock.settimeout(timeout_s)
                return conn, True
        if origin[0] == "https" and self._tls is None:
            with self._lock:
                if self._tls is None:
                    self._tls = ssl.create_default_context()  # ~25 ms: once per process
        tls = self._tls
        scheme, host, port = origin
        fresh: http.client.HTTPConnection
        if scheme == "https":
            fresh = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=tls)
        else:
            fresh = http.client.HTTPConnection(host, port, timeout=timeout_s)
        sock = self._connect_checked(host, port, timeout_s)
        fresh.sock = tls.wrap_socket(sock, server_hostname=host) if scheme == "https" and tls else sock
        # http.client writes headers and body in two sends; with Nagle on, the body waits for the
        # server's delayed ACK (40 ms on Linux) on every request
        if fresh.sock is not None:
            fresh.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return fresh, False

    def _connect_checked(self, host: str, port: int, timeout_s: float) -> socket.socket:
        """Connect to an address of ``host`` that the SSRF policy permits (raises UnsafeURLError otherwise)."""
        last: OSError | None = None
        for addr in netguard.resolve_and_check(host, port, self._allow):
            try:
                return socket.create_connection((addr, port), timeout=timeout_s)
            except OSError as exc:
                last = exc
        raise last if last is not None else OSError(f"no address to connect to for {host}")

    def put(self, origin: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        """Return a connection whose response was read completely."""
        idle = self._idle.setdefault(origin, deque())
        if len(idle) < MAX_IDLE_PER_ORIGIN:
            idle.append(conn)
            return
        conn.close()


POOL = _Pool()


class Poster:
    """POSTs bodies to one URL; returns ``"HTTP <status>"`` on 2xx, raises the typed errors otherwise."""

    def __init__(self, url: str, timeout_s: float, *, label: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentSendError(f"{label}: not an http(s) URL")
        self._origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host = parts.netloc.rpartition("@")[2]
        self._timeout = timeout_s
        self._label = label

    def post(self, content: bytes, headers: dict[str, str]) -> str:
        """Send once (a stale pooled connection is replaced once). See :class:`Channel` for the errors."""
        started = time.monotonic()
        hdrs = {"Host": self._host, "User-Agent": "Wirewatch/0.1 alerts", "Content-Length": str(len(content)),
                **headers}
        for _ in range(2):
            try:
                conn, reused = POOL.get(self._origin, self._timeout)
            except netguard.UnsafeURLError as exc:
                raise PermanentSendError(f"{self._label}: refused by the SSRF guard: {exc}") from exc
            except TimeoutError as exc:
                raise RetryableSendError(f"{self._label}: connect timed out after {self._timeout:.1f}s") from exc
            except OSError as exc:
                raise RetryableSendError(f"{self._label}: cannot connect ({type(exc).__name__})") from exc
            try:
                conn.request("POST", self._path, body=content, headers=hdrs)
                resp = conn.getresponse()
                body = resp.read(MAX_BODY)
            except _STALE as exc:
                conn.close()
                if reused:
                    continue  # the server had closed this idle connection; the request never got an answer
                raise RetryableSendError(f"{self._label}: {type(exc).__name__}") from exc
            except TimeoutError as exc:
                conn.close()
                raise RetryableSendError(f"{self._label}: timed out after {time.monotonic() - started:.1f}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise RetryableSendError(f"{self._label}: {type(exc).__name__}") from exc
            if resp.will_close or not resp.isclosed():
                conn.close()
            else:
                POOL.put(self._origin, conn)
            return self._outcome(resp.status, resp.getheader("Retry-After"), body)
        raise RetryableSendError(f"{self._label}: connection closed twice before an answer")

    def _outcome(self, status: int, retry_after_header: str | None, body: bytes) -> str:
        if 200 <= status < 300:
            return f"HTTP {status}"
        text = body[:200].decode(errors="replace").replace("\n", " ")
        if status == 429 or status >= 500:
            raise RetryableSendError(f"{self._label}: HTTP {status} {text}", status=status,
                                     retry_after_s=retry_after(retry_after_header, cap_s=MAX_RETRY_AFTER_S))
        raise PermanentSendError(f"{self._label}: HTTP {status} {text}", status=status)

    def close(self) -> None:
        """Nothing to release: connections are pooled per process."""


class JsonPoster:
    """A channel that POSTs a JSON document built by ``payload`` to the subscription's URL (Slack, Teams).

    Subclasses set ``kind``, ``budget``, ``budget_per_s`` and ``payload``; the URL may be the secret itself,
    so only :func:`target_label` of it is ever logged.
    """

    kind: ClassVar[str]
    budget: ClassVar[int]
    budget_per_s: ClassVar[float]

    def __init__(self, spec: ChannelSpec, settings: AlertsSettings) -> None:
        self._poster = Poster(spec.target, settings.send_timeout_s, label=target_label(spec))

    def send(self, n: Notification) -> str:
        """POST the document once; see :class:`alerts.channels.base.Channel`."""
        body = json.dumps(self.payload(n), ensure_ascii=False).encode()
        return self._poster.post(body, {"Content-Type": "application/json"})

    def close(self) -> None:
        """Release the poster (its connections are pooled per process)."""
        self._poster.close()

    @staticmethod
    def payload(n: Notification) -> dict[str, Any]:
        """The document for ``n`` (each channel's own)."""
        raise NotImplementedError
