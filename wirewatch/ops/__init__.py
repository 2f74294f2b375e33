"""Operator tooling: ``wirewatch run`` (supervisor), ``demo``, ``status`` and ``replay``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the operator commands to the ``wirewatch`` CLI."""
    from wirewatch.ops.cli import register as _register

    _register(app)
