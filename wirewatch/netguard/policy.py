"""The SSRF policy: which addresses and URLs feed and webhook requests may reach (see :mod:`wirewatch.netguard`).

:func:`check_url` judges a URL as registered; :func:`resolve_and_check` judges a host at every use, after
DNS resolution. Both raise :class:`UnsafeURLError` naming the host, the address and why it is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_UNLESS = "not allowed unless api.url_allowlist permits it"
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class UnsafeURLError(ValueError):
    """A URL or address that the SSRF policy refuses; the message says which part and why."""


@dataclass(frozen=True)
class Allowlist:
    """Operator exceptions to the policy: networks and host names (``.example.com`` covers subdomains)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()

    def permits_ip(self, ip: IP) -> bool:
        """True when ``ip`` lies in an allowed network."""
        return any(ip.version == net.version and ip in net for net in self.networks)

    def permits_host(self, host: str) -> bool:
        """True when ``host`` is an allowed name or lies under an allowed domain."""
        h = host.lower().rstrip(".")
        return h in self.hosts or any(h.endswith(d) or h == d[1:] for d in self.domains)


def allowlist(entries: Iterable[str] | Allowlist | None) -> Allowlist:
    """Parse allow-list entries (CIDR, address, host name or ``.domain`` / ``*.domain``).

    Raises:
        UnsafeURLError: for an entry that is none of these (the message quotes it).
    """
    if isinstance(entries, Allowlist):
        return entries
    return _parse_allowlist(tuple(entries or ()))


@lru_cache(maxsize=64)
def _parse_allowlist(entries: tuple[str, ...]) -> Allowlist:
    nets, hosts, domains = [], set(), []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if entry.startswith("*."):
            entry = entry[1:]
        name = entry.lstrip(".")
        if not name or not all(part and (part.replace("-", "").isalnum()) for part in name.split(".")):
            raise UnsafeURLError(f"url_allowlist entry {raw!r} is neither a CIDR, an address nor a host name")
        if entry.startswith("."):
            domains.append(entry)
        else:
            hosts.add(entry)
    return Allowlist(tuple(nets), frozenset(hosts), tuple(domains))


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 transition form carries, and the form's name."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _IPV4_COMPAT and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _v4_reason(ip: ipaddress.IPv4Address) -> str | None:
    if ip in _METADATA:
        return "the cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in _CGNAT:
        return "a carrier-grade NAT (100.64.0.0/10) address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


def blocked_reason(ip: IP, allow: Allowlist | None = None) -> str | None:
    """Why the policy refuses ``ip``, or None when it may be reached.

    An address in an allowed network is permitted; an IPv6 transition form (IPv4-mapped, NAT64, 6to4,
    Teredo, IPv4-compatible) is judged by the IPv4 address it carries, and permitted when either the
    IPv6 address or the carried IPv4 address is allowed.
    """
    allow = allow or Allowlist()
    if allow.permits_ip(ip):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_reason(ip)
    if ip in _METADATA:
        return "the cloud metadata address"
    embedded = _embedded_v4(ip)
    if embedded is not None:
        form, v4 = embedded
        if allow.permits_ip(v4):
            return None
        inner = _v4_reason(v4)
        return f"{inner} in {form} form ({v4})" if inner else None
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_site_local:
        return "a site-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private (unique local) address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a non-public address"
    return None


def literal_ip(host: str) -> IP | None:
    """``host`` as an address when it is one in any spelling the resolver accepts (``127.1``, ``0x7f.1``)."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if h and all(c in "0123456789abcdefxABCDEFX." for c in h) and h[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed :func:`check_url`: its scheme, host (lower case) and port."""

    url: str
    scheme: str
    host: str
    port: int


def check_url(url: str, allow: Iterable[str] | Allowlist | None = None, *, field: str = "url") -> CheckedURL:
    """Check a URL before it is stored: scheme, host, credentials, and literal addresses.

    Host names are not resolved here (a feed whose name does not resolve today may tomorrow);
    :func:`resolve_and_check` runs at every use.

    Raises:
        UnsafeURLError: naming ``field`` and the reason.
    """
    al = allowlist(allow)
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURLError(f"{field}: a URL is required")
    if any(ord(c) < 0x21 for c in url):
        raise UnsafeURLError(f"{field}: URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURLError(f"{field}: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURLError(f"{field}: only http and https URLs are accepted, got {scheme or 'no'} scheme")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeURLError(f"{field}: credentials in URLs are not accepted; use the secret field instead")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeURLError(f"{field}: URL has no host")
    if not host.isascii() and not host.startswith("["):
        # Judge the name the resolver will see: IDNA maps look-alikes such as "ⓛocalhost" to "localhost".
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise UnsafeURLError(f"{field}: host {parts.hostname!r} is not a valid host name") from exc
    port = port or (443 if scheme == "https" else 80)
    if al.permits_host(host):
        return CheckedURL(url, scheme, host, port)
    ip = literal_ip(host)
    if ip is not None:
        reason = blocked_reason(ip, al)
        if reason:
            raise UnsafeURLError(f"{field}: {host} is {reason}; {_UNLESS}")
    elif host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".localdomain")):
        raise UnsafeURLError(f"{field}: host {host} names a local or internal address; "
                             f"{_UNLESS}")
    return CheckedURL(url, scheme, host, port)


Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), via the system resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_and_check(
    host: str, port: int, allow: Iterable[str] | Allowlist | None = None, *, resolver: Resolver | None = None
) -> list[str]:
    """Resolve ``host`` and return its addresses, all of which the policy permits.

    A host name on the allow-list is trusted whatever it resolves to. Otherwise every address must pass:
    one refused address refuses the host (a name that mixes public and private answers is an attack).

    Raises:
        UnsafeURLError: when an address is refused (the message names host, address and reason) or
            the name does not resolve.
    """
    al = allowlist(allow)
    ip = literal_ip(host)
    if ip is not None:
        reason = blocked_reason(ip, al)
        if reason:
            raise UnsafeURLError(f"{host} is {reason}; {_UNLESS}")
        return [str(ip)]
    try:
        addresses = list((resolver or system_resolver)(host, port))
    except OSError as exc:
        raise UnsafeURLError(f"{host} does not resolve: {exc}") from exc
    if not addresses:
        raise UnsafeURLError(f"{host} resolves to no address")
    if al.permits_host(host):
        return addresses
    for addr in addresses:
        reason = blocked_reason(ipaddress.ip_address(addr.split("%", 1)[0]), al)
        if reason:
            raise UnsafeURLError(f"{host} resolves to {addr}, {reason}; {_UNLESS}")
    return addresses


def check_request_url(url: str, allow: Iterable[str] | Allowlist | None = None,
                      *, resolver: Resolver | None = None) -> list[str]:
    """Both checks for one hop: :func:`check_url` then :func:`resolve_and_check`; returns the addresses."""
    c = check_url(url, allow)
    return resolve_and_check(c.host, c.port, allow, resolver=resolver)
