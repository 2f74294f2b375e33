"""httpx clients and transports that apply the SSRF policy on every connection (see :mod:`wirewatch.netguard`).

The network backend resolves the host, checks every address (:func:`wirewatch.netguard.policy.resolve_and_check`)
and connects to the checked address itself, so a DNS answer that changes between check and connection cannot
slip through; the request hook applies :func:`wirewatch.netguard.policy.check_url` to every hop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from wirewatch.netguard.policy import Allowlist, Resolver, UnsafeURLError, allowlist, check_url, resolve_and_check


class _GuardedSyncBackend(httpcore.SyncBackend):
    def __init__(self, allow: Allowlist, resolver: Resolver | None) -> None:
        self._allow = allow
        self._resolver = resolver

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        addresses = resolve_and_check(host, port, self._allow, resolver=self._resolver)
        last: Exception | None = None
        for addr in addresses:
            try:
                return super().connect_tcp(addr, port, timeout=timeout, local_address=local_address,
                                           socket_options=socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise UnsafeURLError("unix sockets are not reachable through the guarded transport")


class _GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allow: Allowlist, resolver: Resolver | None) -> None:
        self._allow = allow
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        import anyio

        addresses = await anyio.to_thread.run_sync(
            lambda: resolve_and_check(host, port, self._allow, resolver=self._resolver))
        last: Exception | None = None
        for addr in addresses:
            try:
                return await self._inner.connect_tcp(addr, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise UnsafeURLError("unix sockets are not reachable through the guarded transport")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _hook(al: Allowlist) -> Callable[[httpx.Request], None]:
    def hook(request: httpx.Request) -> None:
        check_url(str(request.url), al)
    return hook


def guarded_transport(allow: Iterable[str] | Allowlist | None = None, *, resolver: Resolver | None = None,
                      **kwargs: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` whose every connection is checked after DNS resolution.

    Use it with ``follow_redirects=True`` and every hop is checked (each hop opens or reuses a connection
    to a checked address). ``kwargs`` go to ``httpx.HTTPTransport`` (``verify``, ``limits``, ``retries``...);
    proxies are not supported (a proxy would resolve names itself). Pair it with
    ``event_hooks={"request": [request_hook(allow)]}`` to also refuse credentials or odd schemes per hop.
    """
    kwargs.pop("proxy", None)
    transport = httpx.HTTPTransport(**kwargs)
    # httpx does not take a network backend; the pool's backend is the one seam for connecting ourselves.
    transport._pool._network_backend = _GuardedSyncBackend(allowlist(allow), resolver)  # type: ignore[union-attr]
    return transport


def guarded_async_transport(allow: Iterable[str] | Allowlist | None = None, *,
                            resolver: Resolver | None = None, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """The asyncio counterpart of :func:`guarded_transport`."""
    kwargs.pop("proxy", None)
    transport = httpx.AsyncHTTPTransport(**kwargs)
    transport._pool._network_backend = _GuardedAsyncBackend(allowlist(allow), resolver)  # type: ignore[union-attr]
    return transport


def request_hook(allow: Iterable[str] | Allowlist | None = None) -> Callable[[httpx.Request], None]:
    """An httpx request event hook that applies :func:`check_url` to every request, redirects included."""
    return _hook(allowlist(allow))


def async_request_hook(allow: Iterable[str] | Allowlist | None = None) -> Callable[[httpx.Request], Any]:
    """The async client's version of :func:`request_hook`."""
    sync = _hook(allowlist(allow))

    async def hook(request: httpx.Request) -> None:
        sync(request)
    return hook


def guarded_client(allow: Iterable[str] | Allowlist | None = None, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` with the guarded transport and the per-request hook, not trusting proxy env."""
    al = allowlist(allow)
    transport_kw = {k: kwargs.pop(k) for k in ("verify", "limits", "retries", "http2") if k in kwargs}
    return httpx.Client(transport=guarded_transport(al, **transport_kw), event_hooks={"request": [_hook(al)]},
                        trust_env=False, **kwargs)


def guarded_async_client(allow: Iterable[str] | Allowlist | None = None, **kwargs: Any) -> httpx.AsyncClient:
    """The asyncio counterpart of :func:`guarded_client`."""
    al = allowlist(allow)
    transport_kw = {k: kwargs.pop(k) for k in ("verify", "limits", "retries", "http2") if k in kwargs}
    return httpx.AsyncClient(transport=guarded_async_transport(al, **transport_kw),
                             event_hooks={"request": [async_request_hook(al)]}, trust_env=False, **kwargs)
