"""redis-server (AOF on) stopped and started mid-stream, under ingest (all three stages) and under alerts:
0 articles lost, 0 notifications lost, 0 duplicates outside the acknowledged window; recovery time printed.
``python -m bench.faults`` runs the same scenarios on a stack of their own and prints the table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import faults_support as fs
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _check(r: fs.FaultResult) -> None:
    print(f"\n{fs.HEADER}\n{r.row()}\n  {r.detail}")
    assert r.articles_lost in (0, None) and r.notifications_lost in (0, None) and r.duplicates == 0, r.detail
    assert r.recovery_s is not None and all(r.extra["alive"].values()), r.detail
    assert not r.extra["tracebacks"], r.extra["tracebacks"]


@pytest.mark.timeout(240)
def test_redis_restart_under_ingest_loses_nothing(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    _check(fs.redis_restart_under_ingest(make_settings, tmp_path))


@pytest.mark.timeout(180)
def test_redis_restart_under_alerts_loses_nothing(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    _check(fs.redis_restart_under_alerts(make_settings, tmp_path))
