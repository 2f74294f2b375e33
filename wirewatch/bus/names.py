"""Names that several roles must agree on: consumer group ids, replay headers, client connection options."""

from __future__ import annotations

from typing import Any

from wirewatch.settings import Settings

# The consumer roles. Each joins the group ``<kafka.group_prefix>-<role>`` ("wirewatch-classify" and
# "wirewatch-alerts" by default); the workers join them and ops' watchdog and lag report read them.
ROLES = ("classify", "alerts")

# Headers on the copies a replay produces (``wirewatch.ops.replay``): which replay, the original record
# (``topic:partition:offset``) and, when the replay was for one topic, that topic's id (classify then scores
# the copy against that topic only).
REPLAY_HEADER = "wirewatch.replay"
REPLAY_SOURCE_HEADER = "wirewatch.replay.source"
REPLAY_TOPIC_HEADER = "wirewatch.replay.topic"


def role_group(settings: Settings, role: str) -> str:
    """The consumer group id of ``role`` ("classify" or "alerts") under ``settings``."""
    if role not in ROLES:
        raise ValueError(f"unknown consumer role {role!r}; expected one of {', '.join(ROLES)}")
    return f"{settings.kafka.group_prefix}-{role}"


def role_groups(settings: Settings) -> dict[str, str]:
    """Each consumer role's group id under ``settings``."""
    return {role: role_group(settings, role) for role in ROLES}


def client_config(settings: Settings) -> dict[str, Any]:
    """The connection options every Kafka client of ``settings`` shares: bootstrap servers, security, SASL."""
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": k.security_protocol,
    }
    if k.sasl_mechanism:
        conf.update(
            sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_username, sasl_plain_password=k.sasl_password
        )
    return conf
