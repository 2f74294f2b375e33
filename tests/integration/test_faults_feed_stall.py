"""A feed host that stalls mid-body: the fetch is cut by the read timeout, counted and logged, the other
feeds go on, and once the host answers again every entry of every feed is on ``articles``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import faults_support as fs
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(150)
def test_feed_host_stalling_mid_body_loses_nothing(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    r = fs.feed_stall(make_settings, tmp_path)
    print(f"\n{fs.HEADER}\n{r.row()}\n  {r.detail}")
    assert r.articles_lost == 0 and r.recovery_s is not None, r.detail
    assert r.extra["failed"] >= 1, "the stall was never noticed"
    assert all(r.extra["alive"].values()) and not r.extra["tracebacks"], r.detail
