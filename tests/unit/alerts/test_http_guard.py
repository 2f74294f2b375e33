"""The pooled HTTP sender re-checks each target against the SSRF guard when it connects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts.channels import PermanentSendError
from alerts.channels._http import POOL, Poster


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        POOL.configure(())


def test_loopback_target_refused_at_send_time_without_allowlist(receiver: str) -> None:
    POOL.configure(())
    with pytest.raises(PermanentSendError, match="SSRF guard"):
        Poster(receiver.replace("127.0.0.1", "localhost"), 2.0, label="webhook test").post(b"{}", {})


def test_metadata_address_refused_at_send_time() -> None:
    POOL.configure(("127.0.0.1",))
    with pytest.raises(PermanentSendError, match="SSRF guard"):
        Poster("http://169.254.169.254/latest/meta-data/", 2.0, label="webhook test").post(b"{}", {})


def test_allowlisted_loopback_target_is_sent(receiver: str) -> None:
    POOL.configure(("127.0.0.1",))
    assert Poster(receiver, 2.0, label="webhook test").post(b"{}", {}) == "HTTP 204"
