"""Which pipeline roles this installation can run, and the command line that runs each one.

A role is available when the ``wirewatch`` CLI has a command of that name (a stage registered it). A role
that is a command group runs as ``wirewatch <role> run`` when it has a ``run`` subcommand.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from wirewatch.ops.supervisor import Child

ROLES = ("ingest", "classify", "alerts", "api")
SCALABLE = ("ingest", "classify", "alerts")
# Not ``python -m wirewatch.cli``: that would load the CLI module twice (as __main__ and as wirewatch.cli),
# and stages reading ``wirewatch.cli.settings_of`` would not see the global options parsed by __main__.
WIREWATCH = (sys.executable, "-c", "import sys; sys.argv[0] = 'wirewatch'; from wirewatch.cli import main; main()")


def role_commands(app: typer.Typer) -> dict[str, tuple[str, ...] | None]:
    """Each known role mapped to its CLI words, or None when no stage registered it yet.

    Words are ``("classify",)`` for a plain command, ``("ingest", "run")`` for a group with ``run``.
    """
    root = typer.main.get_command(app)
    # Duck-typed: typer builds its groups on its own copy of click, not on the click package's classes.
    commands: dict[str, Any] = getattr(root, "commands", {})
    out: dict[str, tuple[str, ...] | None] = {}
    for role in ROLES:
        cmd = commands.get(role)
        sub = getattr(cmd, "commands", None)
        if cmd is None:
            out[role] = None
        elif sub is not None and not getattr(cmd, "invoke_without_command", False):
            out[role] = (role, "run") if "run" in sub else None
        else:
            out[role] = (role,)
    return out


def global_options(config: Path | None, log_level: str | None, log_format: str | None) -> list[str]:
    """The ``wirewatch`` options a child must get to see the same configuration as its parent."""
    opts: list[str] = []
    if config is not None:
        opts += ["--config", str(config)]
    if log_level:
        opts += ["--log-level", log_level]
    if log_format:
        opts += ["--log-format", log_format]
    return opts


def build_children(
    words: dict[str, tuple[str, ...]],
    *,
    options: Sequence[str],
    scale: dict[str, int] | None = None,
    metrics_ports: dict[str, int | None] | None = None,
    env: dict[str, str] | None = None,
) -> list[Child]:
    """One :class:`Child` per role and replica, each with ``env`` added to its environment.

    Replica ``i`` > 0 of a role is named ``role-i`` and gets its own metrics port (the role's port + i),
    so replicas on one machine do not collide.
    """
    out: list[Child] = []
    for role, cli_words in words.items():
        replicas = (scale or {}).get(role, 1)
        base_port = (metrics_ports or {}).get(role)
        for i in range(replicas):
            child_env = dict(env or {})
            if i and base_port:
                child_env[f"WIREWATCH_{role.upper()}__METRICS_PORT"] = str(base_port + i)
            name = role if i == 0 else f"{role}-{i}"
            out.append(Child(name, (*WIREWATCH, *options, *cli_words), child_env))
    return out


def parse_scale(items: Sequence[str]) -> dict[str, int]:
    """``["classify=3", "alerts=2"]`` to ``{"classify": 3, "alerts": 2}``.

    Raises:
        ValueError: naming the bad item (unknown role, not ``ROLE=N``, N < 1).
    """
    out: dict[str, int] = {}
    for item in items:
        role, sep, count = item.partition("=")
        if not sep or role not in SCALABLE or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--scale {item!r}: expected ROLE=N, ROLE one of {', '.join(SCALABLE)}, N >= 1")
        out[role] = int(count)
    return out
