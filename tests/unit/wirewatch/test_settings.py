"""Settings: TOML below environment, bad values fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wirewatch.cli import app
from wirewatch.settings import ConfigError, load_settings


def test_toml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[kafka]\nbootstrap_servers = "k1:9092"\npartitions = 12\n[redis]\nurl = "redis://r:6379/0"\n')
    monkeypatch.setenv("WIREWATCH_KAFKA__PARTITIONS", "24")
    s = load_settings(f)
    assert s.kafka.bootstrap_servers == "k1:9092" and s.kafka.partitions == 24
    assert s.redis_url == "redis://r:6379/0" and not s.local_kafka


def test_defaults_point_at_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREWATCH_CONFIG", raising=False)
    s = load_settings(None)
    assert s.local_kafka and s.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.topics.articles == "wirewatch.articles" and s.dlq("x") == "x.dlq"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[kafka]\npartitions = "many"\n', "kafka.partitions"),
        ('[kafka]\nbootstrap_servers = "no-port"\n', "kafka.bootstrap_servers"),
        ('[redis]\nurl = "http://x"\n', "redis.url"),
        ('[log]\nlevel = "loud"\n', "log.level"),
        ('[kafak]\nx = 1\n', "kafak"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(f)
    assert key in str(info.value)


def test_env_error_names_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREWATCH_STACK__KAFKA_PORT", "99999")
    with pytest.raises(ConfigError, match="stack.kafka_port"):
        load_settings(None)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_config_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[kafka]\nbootstrap_servers = "k:9092"\n')
    r = CliRunner().invoke(app, ["config", "check", str(good)])
    assert r.exit_code == 0 and "ok" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[kafka]\npartitions = 0\n')
    r = CliRunner().invoke(app, ["config", "check", str(bad)])
    assert r.exit_code == 2 and "kafka.partitions" in r.output
