"""``ops.metrics_addr`` from the TOML file reaches the workers ``wirewatch run`` starts.

The workers' ``metrics.serve(port)`` finds the bind address in ``$WIREWATCH_OPS__METRICS_ADDR``; before the
supervisor handed the configured address to its children, a TOML ``ops.metrics_addr`` changed only the
supervisor's own /metrics and every worker stayed on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import typer

from wirewatch.ops.runner import plan
from wirewatch.settings import load_settings


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command("ingest")
    def ingest() -> None:
        """A worker."""

    @app.command("alerts")
    def alerts() -> None:
        """Another."""

    return app


def test_the_configured_metrics_addr_is_handed_to_every_worker(tmp_path: Path) -> None:
    cfg = tmp_path / "wirewatch.toml"
    cfg.write_text('[ops]\nmetrics_addr = "0.0.0.0"\n')
    settings = load_settings(cfg)
    assert settings.ops.metrics_addr == "0.0.0.0"
    children = plan(_app(), settings, only=["ingest", "alerts"], scale={"alerts": 2}, config=cfg).children
    assert [c.role for c in children] == ["ingest", "alerts", "alerts-1"]
    assert all(c.env.get("WIREWATCH_OPS__METRICS_ADDR") == "0.0.0.0" for c in children)
    assert children[2].env["WIREWATCH_ALERTS__METRICS_PORT"] == str(settings.alerts.metrics_port + 1)


def test_the_default_stays_loopback(tmp_path: Path) -> None:
    children = plan(_app(), load_settings(None), only=["ingest"]).children
    assert children[0].env["WIREWATCH_OPS__METRICS_ADDR"] == "127.0.0.1"
