"""The long tail through Apprise URLs (Discord, Telegram, Matrix, ntfy, ...), as plain text.

Apprise reports only success or failure, not why; a failure is taken as retryable and the runner's
attempt limit bounds it. A URL Apprise cannot parse is permanent. The URL holds credentials and is
never logged.
"""

from __future__ import annotations

from typing import ClassVar

import apprise as _apprise

from alerts.channels.base import Notification, PermanentSendError, RetryableSendError, clip, plain, safe_url
from wirewatch.records import ChannelSpec
from wirewatch.settings import AlertsSettings

TITLE_LIMIT = 250
BODY_LIMIT = 1900  # fits the tightest common services (Discord 2000)


def body(n: Notification) -> str:
    """The plain-text body."""
    lines: list[str] = []
    for item in n.items[:20] if n.kind == "digest" else n.items[:1]:
        lines.append(("* " if n.kind == "digest" else "") + plain(item.title))
        src = plain(item.source)
        url = safe_url(item.url)
        lines.append("  " + " ".join(p for p in (src, url) if p))
        if item.summary and n.kind != "digest":
            lines.append(clip(plain(item.summary), 800))
    lines.append(f"Topic: {plain(n.topic_name or n.topic_id)}")
    return clip("\n".join(lines), BODY_LIMIT)


class AppriseChannel:
    """Notify through one Apprise URL."""

    kind: ClassVar[str] = "apprise"
    budget: ClassVar[int] = 2
    budget_per_s: ClassVar[float] = 1.0

    def __init__(self, spec: ChannelSpec, settings: AlertsSettings) -> None:
        self._apprise = _apprise.Apprise()
        if not self._apprise.add(spec.target):
            raise PermanentSendError("apprise: the URL is not one Apprise understands")

    def send(self, n: Notification) -> str:
        """Notify once; see :class:`alerts.channels.base.Channel`."""
        ok = self._apprise.notify(title=clip(plain(n.heading), TITLE_LIMIT), body=body(n),
                                  body_format=_apprise.NotifyFormat.TEXT)
        if not ok:
            raise RetryableSendError("apprise: the service did not accept the notification")
        return "apprise ok"

    def close(self) -> None:
        """Nothing to release."""
