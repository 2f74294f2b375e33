"""Which roles ``wirewatch run`` can start, how it names replicas, and what a bad --scale gets."""

from __future__ import annotations

import pytest
import typer

from wirewatch.ops.roles import WIREWATCH, build_children, global_options, parse_scale, role_commands


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command("ingest")
    def ingest() -> None:
        """Plain command."""

    alerts = typer.Typer(invoke_without_command=True)

    @alerts.callback()
    def alerts_main() -> None:
        """Group that runs the worker without a subcommand."""

    @alerts.command("replay-ledger")
    def alerts_tool() -> None:
        """A tool."""

    classify = typer.Typer()

    @classify.command("run")
    def classify_run() -> None:
        """Group with a run subcommand."""

    @classify.command("eval")
    def classify_eval() -> None:
        """Another subcommand."""

    app.add_typer(alerts, name="alerts")
    app.add_typer(classify, name="classify")
    return app


def test_role_words_for_commands_groups_and_missing_roles() -> None:
    assert role_commands(_app()) == {"ingest": ("ingest",), "classify": ("classify", "run"),
                                     "alerts": ("alerts",), "api": None}


def test_a_group_without_run_that_needs_a_subcommand_is_not_runnable() -> None:
    app = typer.Typer()
    tools = typer.Typer()

    @tools.command("list")
    def listing() -> None:
        """Tool only."""

    @tools.command("show")
    def show() -> None:
        """Tool only."""

    app.add_typer(tools, name="api")
    assert role_commands(app)["api"] is None


def test_children_get_global_options_and_replicas_get_their_own_metrics_port() -> None:
    opts = global_options(None, "debug", "json")
    assert opts == ["--log-level", "debug", "--log-format", "json"]
    kids = build_children({"classify": ("classify",), "api": ("api",)}, options=opts, scale={"classify": 3},
                          metrics_ports={"classify": 9102})
    assert [k.role for k in kids] == ["classify", "classify-1", "classify-2", "api"]
    assert kids[0].argv == (*WIREWATCH, *opts, "classify")
    assert kids[0].env == {}
    assert kids[2].env == {"WIREWATCH_CLASSIFY__METRICS_PORT": "9104"}


@pytest.mark.parametrize("bad", ["classify", "classify=0", "api=2", "classify=two", "=3"])
def test_bad_scale_gets_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="expected ROLE=N"):
        parse_scale([bad])


def test_scale_parses() -> None:
    assert parse_scale(["classify=3", "alerts=2"]) == {"classify": 3, "alerts": 2}
