"""SSRF guard: tables of URLs and addresses with what each gets, plus the guarded httpx transport."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from wirewatch import netguard
from wirewatch.netguard import UnsafeURLError, blocked_reason, check_url, resolve_and_check

# (url, substring of the refusal) -- each refused at registration.
REFUSED_URLS = [
    ("ftp://example.com/feed", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://example.com/", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("example.com/feed", "only http and https"),
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("https://:secret@example.com/", "credentials"),
    ("http:///nohost", "no host"),
    ("http://exa mple.com/", "whitespace"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://localhost:8080/", "local or internal"),
    ("http://ⓛocalhost/", "local or internal"),
    ("http://ＬＯＣＡＬＨＯＳＴ/", "local or internal"),
    ("http://①②⑦.0.0.1/", "loopback"),
    ("http://api.localhost/", "local or internal"),
    ("http://metadata.google.internal/", "local or internal"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::ffff:127.0.0.1]/", "loopback address in IPv4-mapped form"),
    ("http://[::ffff:10.0.0.1]/", "private address in IPv4-mapped form"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[64:ff9b::a00:1]/", "private address in NAT64 form"),
    ("http://[64:ff9b::7f00:1]/", "loopback address in NAT64 form"),
    ("http://[64:ff9b:1::1]/", "local-use NAT64"),
    ("http://[2002:7f00:1::]/", "loopback address in 6to4 form"),
    ("http://[2002:c0a8:101::]/", "private address in 6to4 form"),
    ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "private address in Teredo form (10.0.0.1)"),
    ("http://[::127.0.0.1]/", "loopback address in IPv4-compatible form"),
    ("http://[fd00:ec2::254]/", "metadata"),
]

ACCEPTED_URLS = [
    "http://example.com/feed.xml",
    "https://news.example.org:8443/rss?x=1",
    "https://93.184.216.34/feed",
    "http://[2606:4700::1111]/",
    "http://[::ffff:93.184.216.34]/",
    "http://[64:ff9b::5db8:d822]/",
    "HTTPS://EXAMPLE.COM/",
    "https://bücher.example/feed",
]


@pytest.mark.parametrize(("url", "why"), REFUSED_URLS)
def test_refused_urls_get_unsafe_url_error_naming_the_reason(url: str, why: str) -> None:
    with pytest.raises(UnsafeURLError) as err:
        check_url(url, field="channel.target")
    assert why in str(err.value)
    assert str(err.value).startswith("channel.target:")


@pytest.mark.parametrize("url", ACCEPTED_URLS)
def test_public_urls_pass(url: str) -> None:
    checked = check_url(url)
    assert checked.scheme in ("http", "https")
    assert checked.port in (80, 443, 8443)


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://127.0.0.1:8080/hook", ["127.0.0.1"]),
        ("http://127.0.0.1:8080/hook", ["127.0.0.0/8"]),
        ("http://[::ffff:127.0.0.1]/", ["127.0.0.1/32"]),
        ("http://10.2.3.4/", ["10.0.0.0/8"]),
        ("http://localhost:9000/", ["localhost"]),
        ("http://hooks.corp.example/", [".corp.example"]),
        ("http://a.b.corp.example/", ["*.corp.example"]),
        ("http://[::1]/", ["::1"]),
    ],
)
def test_allowlist_lets_operator_chosen_addresses_through(url: str, allow: list[str]) -> None:
    assert check_url(url, allow).host


def test_allowlist_of_one_network_does_not_open_another() -> None:
    with pytest.raises(UnsafeURLError, match="private"):
        check_url("http://192.168.0.1/", ["127.0.0.1", "10.0.0.0/8"])


def test_bad_allowlist_entry_is_refused_naming_it() -> None:
    with pytest.raises(UnsafeURLError, match="not a host!"):
        netguard.allowlist(["not a host!"])


def _resolver(table: dict[str, list[str]]) -> netguard.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]
    return resolve


@pytest.mark.parametrize(
    ("host", "answers", "why"),
    [
        ("evil.example", ["127.0.0.1"], "loopback"),
        ("evil.example", ["93.184.216.34", "10.0.0.5"], "private"),
        ("evil.example", ["169.254.169.254"], "metadata"),
        ("evil.example", ["::ffff:192.168.0.10"], "IPv4-mapped"),
        ("evil.example", ["64:ff9b::c0a8:1"], "NAT64"),
        ("evil.example", ["100.100.100.100"], "carrier-grade"),
        ("evil.example", ["fe80::1%eth0"], "link-local"),
        ("nowhere.example", [], "resolves to no address"),
        ("missing.example", None, "does not resolve"),
    ],
)
def test_resolution_to_refused_addresses_is_refused(host: str, answers: list[str] | None, why: str) -> None:
    table = {} if answers is None else {host: answers}
    with pytest.raises(UnsafeURLError, match=why):
        resolve_and_check(host, 443, resolver=_resolver(table))


def test_resolution_to_public_addresses_returns_them() -> None:
    table = {"news.example": ["93.184.216.34", "2606:4700::1"]}
    got = resolve_and_check("news.example", 443, resolver=_resolver(table))
    assert got == ["93.184.216.34", "2606:4700::1"]


def test_allowlisted_name_is_trusted_whatever_it_resolves_to() -> None:
    table = {"hooks.local": ["10.0.0.9"]}
    got = resolve_and_check("hooks.local", 80, ["hooks.local"], resolver=_resolver(table))
    assert got == ["10.0.0.9"]


@pytest.mark.parametrize(
    ("ip", "blocked"),
    [("8.8.8.8", False), ("1.1.1.1", False), ("198.18.0.1", True), ("192.0.2.1", True), ("2001:db8::1", True),
     ("2001:4860:4860::8888", False)],
)
def test_blocked_reason_table(ip: str, blocked: bool) -> None:
    import ipaddress

    assert (blocked_reason(ipaddress.ip_address(ip)) is not None) is blocked


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_guarded_client_refuses_loopback_without_allowlist(local_server: int) -> None:
    with netguard.guarded_client([]) as client, pytest.raises(UnsafeURLError, match="loopback"):
        client.get(f"http://127.0.0.1:{local_server}/")


def test_guarded_client_reaches_allowlisted_server(local_server: int) -> None:
    with netguard.guarded_client(["127.0.0.1"]) as client:
        assert client.get(f"http://127.0.0.1:{local_server}/").text == "ok"


def test_guarded_transport_checks_name_after_resolution(local_server: int) -> None:
    """A public-looking name that resolves to loopback is refused at connection time."""
    resolver = _resolver({"feeds.example": ["127.0.0.1"]})
    with httpx.Client(transport=netguard.guarded_transport([], resolver=resolver)) as client, \
            pytest.raises(UnsafeURLError, match="feeds.example resolves to 127.0.0.1"):
        client.get(f"http://feeds.example:{local_server}/")


def test_guarded_transport_connects_to_the_checked_address(local_server: int) -> None:
    resolver = _resolver({"feeds.example": ["127.0.0.1"]})
    transport = netguard.guarded_transport(["127.0.0.0/8"], resolver=resolver)
    with httpx.Client(transport=transport) as client:
        assert client.get(f"http://feeds.example:{local_server}/").text == "ok"


def test_redirect_into_private_network_is_refused_on_the_hop(local_server: int) -> None:
    """The first hop is allowed (127.0.0.1 is allow-listed); the redirect to 10.0.0.1 is refused."""
    with netguard.guarded_client(["127.0.0.1"], follow_redirects=True) as client, \
            pytest.raises(UnsafeURLError, match="private"):
        client.get(f"http://127.0.0.1:{local_server}/redirect?to=http://10.0.0.1:{local_server}/")


def test_redirect_with_credentials_is_refused_by_the_hook(local_server: int) -> None:
    with netguard.guarded_client(["127.0.0.1"], follow_redirects=True) as client, \
            pytest.raises(UnsafeURLError, match="credentials"):
        client.get(f"http://127.0.0.1:{local_server}/redirect?to=http://u:p@127.0.0.1:{local_server}/")


async def _async_get(url: str, allow: list[str]) -> str:
    async with netguard.guarded_async_client(allow, follow_redirects=True) as client:
        return (await client.get(url)).text


def test_async_client_refuses_and_allows(local_server: int) -> None:
    import asyncio

    assert asyncio.run(_async_get(f"http://127.0.0.1:{local_server}/", ["127.0.0.1"])) == "ok"
    with pytest.raises(UnsafeURLError, match="loopback"):
        asyncio.run(_async_get(f"http://127.0.0.1:{local_server}/", []))
