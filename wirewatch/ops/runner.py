"""The pipeline in one command: choose the roles that exist, start them under a :class:`Supervisor`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from wirewatch import metrics
from wirewatch.log import get_logger
from wirewatch.ops.lag import LagExporter
from wirewatch.ops.roles import ROLES, build_children, global_options, role_commands
from wirewatch.ops.supervisor import Backoff, Child, Supervisor
from wirewatch.ops.watchdog import GroupWatchdog
from wirewatch.settings import Settings

log = get_logger("ops.run")


@dataclass(frozen=True)
class Plan:
    """What ``run`` will start and what it skips (role to the reason)."""

    children: list[Child]
    skipped: dict[str, str]


def plan(
    app: typer.Typer,
    settings: Settings,
    *,
    only: Sequence[str] = (),
    scale: dict[str, int] | None = None,
    config: Path | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
) -> Plan:
    """Decide the children for ``only`` (all roles when empty).

    Raises:
        ValueError: naming an unknown role in ``only``.
    """
    unknown = [r for r in only if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}")
    wanted = list(only) or list(ROLES)
    found = role_commands(app)
    words = {r: w for r, w in found.items() if r in wanted and w is not None}
    skipped = {r: f"no `wirewatch {r}` command is installed yet" for r in wanted if found.get(r) is None}
    ports = {"ingest": settings.ingest.metrics_port, "classify": settings.classify.metrics_port,
             "alerts": settings.alerts.metrics_port}
    # The workers bind /metrics where ``metrics.serve`` finds the address: the environment. Handing them the
    # configured one makes ``ops.metrics_addr`` in the TOML file count, not only the variable.
    children = build_children(words, options=global_options(config, log_level, log_format), scale=scale,
                              metrics_ports=ports, env={"WIREWATCH_OPS__METRICS_ADDR": settings.ops.metrics_addr})
    return Plan(children, skipped)


def supervise(settings: Settings, children: Sequence[Child], *, log_dir: Path | None = None,
              install_signals: bool = True, supervisor_out: list[Supervisor] | None = None) -> int:
    """Run ``children`` until SIGTERM/SIGINT, exporting supervisor metrics and consumer-group lag.

    Returns the supervisor's exit status (0 drained cleanly, 1 something had to be killed).
    """
    ops = settings.ops
    sup = Supervisor(
        children,
        backoff=Backoff(ops.restart_initial_s, ops.restart_max_s, ops.stable_after_s),
        drain_timeout_s=ops.drain_timeout_s,
        log_dir=log_dir,
    )
    if supervisor_out is not None:
        supervisor_out.append(sup)
    if install_signals:
        sup.install_signal_handlers()
    try:
        served = metrics.serve(ops.metrics_port, ops.metrics_addr)
    except OSError as exc:
        log.warning("metrics_port_unavailable", port=ops.metrics_port, error=str(exc))
    else:
        if served:
            log.info("metrics_serving", port=served, addr=ops.metrics_addr)
    lag = LagExporter(settings, ops.lag_interval_s).start()
    watchdog = GroupWatchdog(settings, sup, interval_s=ops.watchdog_interval_s,
                             stall_s=ops.stall_after_s).start() if ops.stall_after_s else None
    try:
        return sup.run()
    finally:
        lag.stop()
        if watchdog is not None:
            watchdog.stop()
