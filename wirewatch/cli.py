"""The ``wirewatch`` command: one subcommand per role.

Each stage contributes its own typer app (``ingest.cli``, ``classify.cli``, ``alerts.cli``); this module only
assembles them with the shared commands (``stack``, ``config``) and the global options.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from wirewatch import __version__
from wirewatch.clistate import State, settings_of
from wirewatch.settings import ConfigError, load_settings

__all__ = ["State", "app", "main", "settings_of"]  # State and settings_of live in wirewatch.clistate

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Wirewatch: streaming news monitoring.")
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka (KRaft) and redis-server.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration files.")
app.add_typer(stack_app, name="stack")
app.add_typer(config_app, name="config")


@app.callback()
def _main(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (or $WIREWATCH_CONFIG).")
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error.")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="auto, json or console.")] = None,
) -> None:
    State.config, State.log_level, State.log_format, State._settings = config, log_level, log_format, None


@app.command()
def version() -> None:
    """Print the Wirewatch version."""
    print(f"wirewatch {__version__}")


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="TOML file to validate.")]) -> None:
    """Validate a config file (and the environment over it); exit 2 naming each bad key."""
    try:
        s = load_settings(file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    print(f"{file}: ok")
    print(f"  kafka: {s.kafka.bootstrap_servers or 'local stack on 127.0.0.1:' + str(s.stack.kafka_port)}")
    print(f"  redis: {s.redis.url or 'local stack on 127.0.0.1:' + str(s.stack.redis_port)}")
    print(f"  data dir: {s.data_dir}")
    counts = f"feeds: {len(s.ingest.feeds)}  topics: {len(s.classify.topics)}"
    print(f"  {counts}  subscriptions: {len(s.alerts.subscriptions)}")


def _print_status(rows: list) -> None:  # type: ignore[type-arg]
    for st in rows:
        extra = f"  {st.detail}" if st.detail else ""
        ver = f"  version {st.version}" if st.version else ""
        print(f"{st.name:<6} {st.state:<12} {st.endpoint}{ver}{extra}")


@stack_app.command("up")
def stack_up() -> None:
    """Start the local Kafka and Redis (idempotent) and create the pipeline topics."""
    from wirewatch import bus, stack

    s = settings_of()
    started = time.monotonic()
    try:
        rows = stack.up(s)
        bus.ensure_default_topics(s)
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    _print_status(rows)
    print(f"ready in {time.monotonic() - started:.1f}s (data dir {s.data_dir})")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local Kafka and Redis that ``stack up`` started (never external ones)."""
    from wirewatch import stack

    stopped = stack.down(settings_of())
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command("status")
def stack_status() -> None:
    """Tell whether Kafka and Redis are running, stopped or unreachable; exit 1 unless both answer."""
    from wirewatch import stack

    rows = stack.status(settings_of())
    _print_status(rows)
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Resolve Kafka's jars into the cache (done by ``up`` on first use)."""
    from wirewatch import stack

    s = settings_of()
    try:
        libs = stack.kafka_jars(s)
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    print(f"kafka {stack.kafka_version(s)} jars in {libs}")


def _register_stages() -> None:
    """Add each stage's commands. A stage module exposes ``register(app)``."""
    import importlib

    for name in ("ingest.cli", "classify.cli", "alerts.cli", "wirewatch.ops", "wirewatch.ops_keys"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_stages()


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    # Run through the importable module, not this ``__main__`` copy: stages call
    # ``wirewatch.clistate.settings_of`` and must see the options parsed here.
    import wirewatch.cli

    wirewatch.cli.main()
