"""A subscription that would fail at run time is refused when it is built, naming the field (issue 12, item 2):
by the record itself, and so by ``wirewatch config check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from wirewatch.cli import app
from wirewatch.records import ChannelKind, ChannelSpec, DigestSpec, QuietHours, RateLimit, Subscription
from wirewatch.settings import ConfigError, load_settings

HOOK = {"type": "webhook", "target": "https://hooks.example/desk"}


def _sub(**fields: Any) -> dict[str, Any]:
    return {"id": "desk", "topic_id": "syria", "channel": HOOK} | fields


@pytest.mark.parametrize(("fields", "loc", "needle"), [
    ({"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus_Mons"}},
     ("quiet_hours", "timezone"), "unknown time zone 'Mars/Olympus_Mons'"),
    ({"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Europe"}},  # a directory, not a zone
     ("quiet_hours", "timezone"), "unknown time zone"),
    ({"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "../../../etc/passwd"}},
     ("quiet_hours", "timezone"), "unknown time zone"),
    ({"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": ""}}, ("quiet_hours", "timezone"), "unknown"),
    ({"quiet_hours": {"start": "07:30", "end": "07:30"}}, ("quiet_hours", "end"), "empty window"),
    ({"quiet_hours": {"start": "25:00", "end": "07:30"}}, ("quiet_hours", "start"), "pattern"),
    ({"digest": {"period": "daily", "timezone": "Europe/Atlantis"}}, ("digest", "timezone"), "unknown time zone"),
    ({"digest": {"period": 0}}, ("digest", "period"), "'hourly' or 'daily'"),
    ({"digest": {"at": "8:00"}}, ("digest", "at"), "pattern"),
    ({"rate_limit": {"count": 0}}, ("rate_limit", "count"), "greater than or equal to 1"),
    ({"rate_limit": {"count": -3}}, ("rate_limit", "count"), "greater than or equal to 1"),
    ({"rate_limit": {"count": True}}, ("rate_limit", "count"), "valid integer"),
    ({"rate_limit": {"per_seconds": 0}}, ("rate_limit", "per_seconds"), "greater than or equal to 1"),
    ({"min_score": 1.01}, ("min_score",), "less than or equal to 1"),
    ({"min_score": -0.1}, ("min_score",), "greater than or equal to 0"),
    ({"min_score": float("nan")}, ("min_score",), "finite"),
    ({"topic_id": ""}, ("topic_id",), "at least 1"),
    ({"channel": {"type": "email", "target": "not an address"}}, ("channel", "target"), "email addresses"),
    ({"channel": {"type": "email", "target": "a@example.org\r\nBcc: b@example.org"}}, ("channel", "target"),
     "control characters"),
    ({"channel": {"type": "webhook", "target": "file:///etc/passwd"}}, ("channel", "target"), "http(s) URL"),
    ({"channel": {"type": "slack", "target": "https://"}}, ("channel", "target"), "with a host"),
    ({"channel": {"type": "teams", "target": " https://x.example/h"}}, ("channel", "target"), "whitespace"),
    ({"channel": {"type": "apprise", "target": "no scheme here"}}, ("channel", "target"), "Apprise URL"),
])
def test_bad_subscription_fields_are_refused_naming_the_field(fields: dict[str, Any], loc: tuple[str, ...],
                                                             needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Subscription.model_validate(_sub(**fields))
    first = caught.value.errors()[0]
    assert first["loc"] == loc
    assert needle in first["msg"]


def test_good_values_pass_and_a_naive_mute_is_read_as_utc() -> None:
    sub = Subscription.model_validate(_sub(
        quiet_hours={"start": "22:00", "end": "06:00", "timezone": "America/New_York"},
        digest={"period": "daily", "at": "08:00", "timezone": "Asia/Kolkata"},
        rate_limit={"count": 1, "per_seconds": 1}, min_score=1.0, muted_until="2030-01-01T00:00:00",
        channel={"type": "email", "target": "desk@example.org, night@example.org"}))
    assert sub.muted_until is not None and sub.muted_until.utcoffset() is not None
    assert QuietHours(start="00:00", end="23:59", timezone="UTC").end == "23:59"
    assert DigestSpec(timezone="Etc/GMT+5").timezone == "Etc/GMT+5"
    assert RateLimit(count=5, per_seconds=60).count == 5
    assert ChannelSpec(type=ChannelKind.APPRISE, target="json://127.0.0.1:9/x").target.startswith("json://")


def test_config_check_names_the_bad_subscription_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[alerts.subscriptions]]\nid = "desk"\ntopic_id = "syria"\n'
                   'channel = { type = "webhook", target = "https://hooks.example/desk" }\n'
                   'quiet_hours = { start = "22:00", end = "06:00", timezone = "Mars/Olympus_Mons" }\n')
    r = CliRunner().invoke(app, ["config", "check", str(bad)])
    assert r.exit_code == 2, r.output
    assert "alerts.subscriptions.0.quiet_hours.timezone" in r.output and "Mars/Olympus_Mons" in r.output


def test_config_refuses_a_repeated_subscription_id_and_a_backoff_ceiling_below_its_start() -> None:
    one = _sub()
    with pytest.raises(ConfigError, match="alerts.subscriptions.*'desk' appears more than once"):
        load_settings(None, alerts={"subscriptions": [one, one]})
    with pytest.raises(ConfigError, match="alerts.backoff_max_s.*at least backoff_initial_s"):
        load_settings(None, alerts={"backoff_initial_s": 10, "backoff_max_s": 5})
    assert len(load_settings(None, alerts={"subscriptions": [one, _sub(id="night")]}).alerts.subscriptions) == 2
