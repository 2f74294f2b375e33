"""The settings a ``wirewatch`` command runs with, chosen once by the global options.

The shell (:mod:`wirewatch.cli`) writes :class:`State` when it parses ``--config``, ``--log-level`` and
``--log-format``; every command, the stages' own included, reads the result through :func:`settings_of`.
It lives here, not in the shell, so that a stage's CLI never imports the shell that assembles it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from wirewatch import log as logmod
from wirewatch.settings import ConfigError, Settings, load_settings


class State:
    """What the global options chose; read through :func:`settings_of`."""

    config: Path | None = None
    log_level: str | None = None
    log_format: str | None = None
    _settings: Settings | None = None


def settings_of(ctx: typer.Context | None = None) -> Settings:
    """The process's settings, loaded once; a bad config exits 2 with the message naming the key."""
    if State._settings is None:
        overrides = {}
        if State.log_level or State.log_format:
            overrides["log"] = {"level": State.log_level or "info", "format": State.log_format or "auto"}
        try:
            State._settings = load_settings(State.config, **overrides)
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        logmod.configure(State._settings.log.level, State._settings.log.format)
    return State._settings
