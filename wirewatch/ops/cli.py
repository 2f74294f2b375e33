"""Operator commands: ``run``, ``demo``, ``status`` and ``replay``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from wirewatch.log import get_logger

log = get_logger("ops")


def _stack_up(settings: object) -> None:
    from wirewatch import bus, stack
    from wirewatch.ops.lag import pipeline_topics, wait_for_leaders
    from wirewatch.settings import Settings

    assert isinstance(settings, Settings)
    if settings.local_kafka or settings.local_redis:
        try:
            stack.up(settings)
        except stack.StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from exc
    bus.ensure_default_topics(settings)
    wait_for_leaders(settings, pipeline_topics(settings))


def run(
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this role (repeatable): "
                                                   "ingest, classify, alerts, api.")] = None,
    scale: Annotated[list[str] | None, typer.Option("--scale", help="Replicas of a role, e.g. classify=3 "
                                                    "(repeatable).")] = None,
    log_dir: Annotated[Path | None, typer.Option("--log-dir", help="Write each role's output to "
                                                 "DIR/<role>.log instead of this terminal.")] = None,
    no_stack: Annotated[bool, typer.Option("--no-stack", help="Do not start the local Kafka/Redis.")] = False,
) -> None:
    """Run the pipeline's roles as supervised processes; SIGTERM or Ctrl-C drains them."""
    from wirewatch.cli import State, app, settings_of
    from wirewatch.ops import roles, runner

    s = settings_of()
    try:
        chosen = runner.plan(app, s, only=only or (), scale=roles.parse_scale(scale or []), config=State.config,
                             log_level=State.log_level, log_format=State.log_format)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    for role, why in chosen.skipped.items():
        print(f"skipping {role}: {why}", file=sys.stderr)
    if not chosen.children:
        print("error: none of the requested roles is installed; nothing to run", file=sys.stderr)
        raise typer.Exit(1)
    if not no_stack:
        _stack_up(s)
    running = {c.role for c in chosen.children}
    ports = {"ingest": s.ingest.metrics_port, "classify": s.classify.metrics_port, "alerts": s.alerts.metrics_port}
    print(f"running {', '.join(c.role for c in chosen.children)}", file=sys.stderr)
    if s.ops.metrics_port:
        print(f"  metrics: http://{s.ops.metrics_addr}:{s.ops.metrics_port}/metrics (supervisor, consumer lag)"
              + "".join(f", :{ports[r]} {r}" for r in ("ingest", "classify", "alerts") if r in running and ports[r]),
              file=sys.stderr)
    if "api" in running:
        print(f"  api and dashboard: http://{s.api.host}:{s.api.port}/ui/", file=sys.stderr)
    print(f"  logs: {log_dir}/<role>.log" if log_dir else "  logs: this terminal", file=sys.stderr)
    raise typer.Exit(runner.supervise(s, chosen.children, log_dir=log_dir))


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    deliveries: Annotated[int, typer.Option("--deliveries", min=0, help="Recent deliveries to show.")] = 10,
    watch: Annotated[float, typer.Option("--watch", min=0, help="Refresh every N seconds (0: once).")] = 0,
) -> None:
    """One screen: stack health, consumer lag, throughput, feeds needing a look, recent deliveries."""
    from wirewatch.cli import settings_of
    from wirewatch.ops import status as st

    s = settings_of()
    while True:
        report = st.collect(s, deliveries=deliveries)
        if as_json:
            print(json.dumps(report.to_dict(), indent=2, default=str))
        else:
            if watch:
                print("\033[2J\033[H", end="")
            print(st.render(report))
        if not watch:
            break
        time.sleep(watch)
    if not all(row["ok"] for row in report.stack):
        raise typer.Exit(1)


def replay(
    start: Annotated[str, typer.Option("--from", help="Start: ISO 8601 time, a duration ago (2h) or now.")],
    end: Annotated[str, typer.Option("--to", help="End (exclusive), same forms.")] = "now",
    topic: Annotated[str | None, typer.Option("--topic", help="Classify the replay against this topic id "
                                              "only.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be replayed.")] = False,
) -> None:
    """Re-run classification and alerting for the articles of a time range (nothing already sent is resent)."""
    from wirewatch.cli import settings_of
    from wirewatch.ops import replay as rp

    s = settings_of()
    try:
        t0, t1 = rp.parse_time(start), rp.parse_time(end)

        def progress(done: int, total: int) -> None:
            print(f"\r  replayed {done}/{total}", end="", file=sys.stderr, flush=True)

        result = rp.replay(s, t0, t1, topic_id=topic, dry_run=dry_run, progress=progress)
    except rp.ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    print(file=sys.stderr)
    verb = "would replay" if dry_run else "replayed"
    count = result.found - result.skipped_replays if dry_run else result.produced
    print(f"{verb} {count} article(s) from {result.topic} between {t0.isoformat()} and {t1.isoformat()}"
          f" (replay id {result.replay_id}" + (f", topic {topic}" if topic else "") + ")")
    if result.skipped_replays:
        print(f"skipped {result.skipped_replays} record(s) that were themselves replays")
    for partition, (lo, hi) in sorted(result.ranges.items()):
        if hi > lo:
            print(f"  partition {partition}: offsets {lo}..{hi - 1}")


def exporter() -> None:
    """Serve consumer-group lag and topic end offsets on ops.metrics_port until SIGTERM.

    For deployments whose workers run without ``wirewatch run`` (compose, Kubernetes).
    """
    import signal
    import threading

    from wirewatch import metrics
    from wirewatch.cli import settings_of
    from wirewatch.ops.lag import LagExporter

    s = settings_of()
    if not s.ops.metrics_port:
        print("error: ops.metrics_port is 0; nothing to serve", file=sys.stderr)
        raise typer.Exit(2)
    metrics.serve(s.ops.metrics_port, s.ops.metrics_addr)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    lag = LagExporter(s, s.ops.lag_interval_s).start()
    log.info("exporter_started", port=s.ops.metrics_port, interval_s=s.ops.lag_interval_s)
    done.wait()
    lag.stop()
    log.info("exporter_stopped")


def register(app: typer.Typer) -> None:
    """Add the operator commands to the ``wirewatch`` CLI."""
    from wirewatch.demo.cli import demo

    app.command("run")(run)
    app.command("demo")(demo)
    app.command("status")(status)
    app.command("replay")(replay)
    app.command("exporter")(exporter)
