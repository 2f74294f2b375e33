"""``wirewatch stack up / down / up`` on its own ports and data dir, and status of each state."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wirewatch import stack
from wirewatch.cli import app

pytestmark = pytest.mark.integration


def test_stack_up_down_up(tmp_path: Path, stack_base: dict) -> None:  # type: ignore[type-arg]
    cfg = tmp_path / "stack.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[stack]\nkafka_port = {stack.free_port()}\n'
        f"controller_port = {stack.free_port()}\nredis_port = {stack.free_port()}\n"
    )
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["-c", str(cfg), "stack", "status"])
        assert r.exit_code == 1 and "stopped" in r.output
        r = runner.invoke(app, ["-c", str(cfg), "stack", "up"])
        assert r.exit_code == 0, r.output
        assert "kafka  running" in r.output and "redis  running" in r.output and "ready in" in r.output
        r = runner.invoke(app, ["-c", str(cfg), "stack", "up"])
        assert r.exit_code == 0 and "ready in" in r.output, "up twice is fine"
        r = runner.invoke(app, ["-c", str(cfg), "stack", "down"])
        assert r.exit_code == 0 and "kafka" in r.output and "redis" in r.output
        r = runner.invoke(app, ["-c", str(cfg), "stack", "status"])
        assert r.exit_code == 1 and r.output.count("stopped") == 2
        r = runner.invoke(app, ["-c", str(cfg), "stack", "up"])
        assert r.exit_code == 0, r.output
    finally:
        r = runner.invoke(app, ["-c", str(cfg), "stack", "down"])
    assert "kafka" in r.output
    assert not list((tmp_path / "data" / "stack").glob("*/*.pid")), "down leaves no pid files (no orphans)"


def test_external_services_are_only_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "ext.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n[kafka]\nbootstrap_servers = "127.0.0.1:{stack.free_port()}"\n'
                   f'[redis]\nurl = "redis://127.0.0.1:{stack.free_port()}/0"\n')
    r = CliRunner().invoke(app, ["-c", str(cfg), "stack", "status"])
    assert r.exit_code == 1 and r.output.count("unreachable") == 2
    r = CliRunner().invoke(app, ["-c", str(cfg), "stack", "down"])
    assert "nothing was running" in r.output
    assert not (tmp_path / "stack" / "kafka" / "kafka.pid").exists()
