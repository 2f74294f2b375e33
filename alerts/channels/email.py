"""Email over SMTP: one message with a plain-text and an HTML part.

All feed text is HTML-escaped in the HTML part; links are ours (URLs that passed :func:`safe_url`). Header
values are reduced to one line, so a headline cannot inject headers. ``Message-ID`` derives from the
idempotency key and follow-ups carry ``In-Reply-To``/``References`` to the story's first alert, so mail
clients thread them. SMTP 4xx replies and connection failures are retryable; 5xx replies are permanent.
"""

from __future__ import annotations

import html
import smtplib
from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar

from alerts.channels.base import (
    Notification,
    PermanentSendError,
    RetryableSendError,
    clip,
    plain,
    safe_url,
)
from wirewatch.records import ChannelSpec
from wirewatch.settings import AlertsSettings

SUBJECT_LIMIT = 200
SUMMARY_LIMIT = 2000


def message_id(key: str) -> str:
    """The Message-ID of the notification with idempotency key ``key``."""
    return f"<{key}@wirewatch>"


def render(n: Notification, sender: str, recipients: list[str]) -> EmailMessage:
    """Build the two-part message."""
    msg = EmailMessage()
    msg["Subject"] = clip(plain(n.heading), SUBJECT_LIMIT)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id(n.key)
    msg["X-Wirewatch-Idempotency-Key"] = n.key
    if n.thread_key:
        msg["In-Reply-To"] = message_id(n.thread_key)
        msg["References"] = message_id(n.thread_key)
    text_lines: list[str] = []
    html_parts: list[str] = [f"<h2>{html.escape(plain(n.heading))}</h2>"]
    for item in n.items:
        title, source = plain(item.title), plain(item.source) or "unknown source"
        summary = clip(plain(item.summary), SUMMARY_LIMIT if n.kind != "digest" else 500)
        url = safe_url(item.url)
        text_lines += [f"* {title}" if n.kind == "digest" else title, f"  {source}"]
        if summary:
            text_lines.append(f"  {summary}")
        if url:
            text_lines.append(f"  {url}")
        text_lines.append("")
        head = html.escape(title)
        if url:
            head = f'<a href="{html.escape(url, quote=True)}">{head}</a>'
        html_parts.append(f"<p><strong>{head}</strong><br><em>{html.escape(source)}</em>"
                          + (f"<br>{html.escape(summary)}" if summary else "") + "</p>")
    footer = f"Topic: {plain(n.topic_name or n.topic_id)}"
    if n.kind != "digest":
        footer += f" | {n.article_count} article(s) from {len(n.sources) or 1} source(s)"
        if n.reason:
            footer += f" | {plain(n.reason)}"
    text_lines.append(footer)
    html_parts.append(f"<p><small>{html.escape(footer)}</small></p>")
    msg.set_content("\n".join(text_lines))
    msg.add_alternative("<html><body>" + "".join(html_parts) + "</body></html>", subtype="html")
    return msg


class EmailChannel:
    """Send through the configured SMTP server to ``spec.target`` (comma-separated addresses)."""

    kind: ClassVar[str] = "email"
    budget: ClassVar[int] = 10
    budget_per_s: ClassVar[float] = 1.0

    def __init__(self, spec: ChannelSpec, settings: AlertsSettings) -> None:
        self._to = [a.strip() for a in spec.target.split(",") if a.strip()]
        if not self._to or any(("@" not in a or any(c in a for c in "\r\n<>")) for a in self._to):
            raise PermanentSendError("email: target must be one or more plain addresses")
        self._s = settings
        self._from = spec.options.get("from", settings.smtp_from)

    def send(self, n: Notification) -> str:
        """Deliver through SMTP once; see :class:`alerts.channels.base.Channel`."""
        s = self._s
        msg = render(n, self._from, self._to)
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.send_timeout_s) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password or "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentSendError(f"email: all {len(exc.recipients)} recipient(s) refused") from exc
        except smtplib.SMTPResponseException as exc:
            detail = f"email: SMTP {exc.smtp_code}"
            if 400 <= exc.smtp_code < 500:
                raise RetryableSendError(detail, status=exc.smtp_code) from exc
            raise PermanentSendError(detail, status=exc.smtp_code) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise RetryableSendError(f"email: {s.smtp_host}:{s.smtp_port} {type(exc).__name__}") from exc
        return f"SMTP 250 ({len(self._to) - len(refused)} recipient(s))"

    def close(self) -> None:
        """Nothing to release: one SMTP session per message."""
