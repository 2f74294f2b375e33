"""Channels: one module each, registered here by kind."""

from __future__ import annotations

from alerts.channels.apprise import AppriseChannel
from alerts.channels.base import (
    Channel,
    Item,
    Notification,
    PermanentSendError,
    RetryableSendError,
    SendError,
)
from alerts.channels.email import EmailChannel
from alerts.channels.slack import SlackChannel
from alerts.channels.teams import TeamsChannel
from alerts.channels.webhook import WebhookChannel
from wirewatch.records import ChannelKind, ChannelSpec
from wirewatch.settings import AlertsSettings

REGISTRY: dict[ChannelKind, type[Channel]] = {
    ChannelKind.WEBHOOK: WebhookChannel,
    ChannelKind.SLACK: SlackChannel,
    ChannelKind.TEAMS: TeamsChannel,
    ChannelKind.EMAIL: EmailChannel,
    ChannelKind.APPRISE: AppriseChannel,
}


def build(spec: ChannelSpec, settings: AlertsSettings) -> Channel:
    """The channel for ``spec``. Raises PermanentSendError for a target the channel cannot use."""
    return REGISTRY[spec.type](spec, settings)


__all__ = ["REGISTRY", "Channel", "Item", "Notification", "PermanentSendError",
           "RetryableSendError", "SendError", "build"]
