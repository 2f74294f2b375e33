"""SSRF guard: feed and webhook URLs may only reach the public internet, unless an operator allows more.

Two checks, both driven by the same allow-list (``settings.api.url_allowlist``: CIDRs such as ``10.0.0.0/8``
or ``127.0.0.1``, and host names such as ``hooks.internal`` or ``.corp.example`` for a whole domain):

* :func:`check_url` when a URL is registered: http/https only, a host, no credentials, and no literal
  address (in any spelling: ``127.1``, ``0x7f000001``, ``[::ffff:127.0.0.1]``) in a refused range.
* :func:`resolve_and_check` at every use, after DNS resolution: every address the name resolves to must be
  allowed, so a public name that points at ``169.254.169.254`` is refused.

HTTP clients get the second check on every connection, redirects included, by using
:func:`guarded_transport` / :func:`guarded_async_transport`: their network backend resolves the host,
checks every address, and connects to the checked address itself, so a DNS answer that changes between the
check and the connection (rebinding) cannot slip through. Refusals raise :class:`UnsafeURLError`, a
permanent error: retrying will not help until the operator changes the allow-list.

The policy is :mod:`wirewatch.netguard.policy`; the httpx side, :mod:`wirewatch.netguard.transport`.
"""

from wirewatch.netguard.policy import (
    IP,
    Allowlist,
    CheckedURL,
    Resolver,
    UnsafeURLError,
    allowlist,
    blocked_reason,
    check_request_url,
    check_url,
    literal_ip,
    resolve_and_check,
    system_resolver,
)
from wirewatch.netguard.transport import (
    async_request_hook,
    guarded_async_client,
    guarded_async_transport,
    guarded_client,
    guarded_transport,
    request_hook,
)

__all__ = [
    "Allowlist",
    "CheckedURL",
    "IP",
    "Resolver",
    "UnsafeURLError",
    "allowlist",
    "async_request_hook",
    "blocked_reason",
    "check_request_url",
    "check_url",
    "guarded_async_client",
    "guarded_async_transport",
    "guarded_client",
    "guarded_transport",
    "literal_ip",
    "request_hook",
    "resolve_and_check",
    "system_resolver",
]
