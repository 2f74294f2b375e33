"""HTTP POST shared by the webhook-style channels: one pooled client, statuses mapped to send errors."""

from __future__ import annotations

import email.utils
import threading
import time
from datetime import UTC, datetime

import httpx

from alerts.channels.base import PermanentSendError, RetryableSendError

MAX_RETRY_AFTER_S = 3600.0
_SHARED: httpx.Client | None = None
_SHARED_LOCK = threading.Lock()


def shared_client() -> httpx.Client:
    """One connection pool for every HTTP channel in the process.

    Building an ``httpx.Client`` costs ~25 ms (it loads a TLS context); one per subscription made the
    first send to each of 1,000 subscriptions slow. Timeouts are set per request.
    """
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = httpx.Client(follow_redirects=False, headers={"User-Agent": "Wirewatch/0.1 alerts"},
                                   limits=httpx.Limits(max_connections=128, max_keepalive_connections=64))
        return _SHARED


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or HTTP date), capped at an hour; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER_S)


class Poster:
    """POSTs bodies to one URL; returns ``"HTTP <status>"`` on 2xx, raises the typed errors otherwise."""

    def __init__(self, url: str, timeout_s: float, *, label: str) -> None:
        self._url = url
        self._label = label
        self._timeout = httpx.Timeout(timeout_s)
        self._client = shared_client()

    def post(self, content: bytes, headers: dict[str, str]) -> str:
        """Send once. See :class:`alerts.channels.base.Channel` for the error contract."""
        started = time.monotonic()
        try:
            resp = self._client.post(self._url, content=content, headers=headers, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"{self._label}: timed out after {time.monotonic() - started:.1f}s "
                                     f"({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise RetryableSendError(f"{self._label}: {type(exc).__name__}") from exc
        status = resp.status_code
        if 200 <= status < 300:
            return f"HTTP {status}"
        body = resp.text[:200].replace("\n", " ")
        if status == 429 or status >= 500:
            raise RetryableSendError(f"{self._label}: HTTP {status} {body}", status=status,
                                     retry_after_s=retry_after(resp.headers.get("Retry-After")))
        raise PermanentSendError(f"{self._label}: HTTP {status} {body}", status=status)

    def close(self) -> None:
        """Nothing to release: the connection pool is shared by the process."""
