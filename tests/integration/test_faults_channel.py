"""A webhook channel down (503) for 20 s while matches keep coming, then back: every notification arrives
once, none twice under two keys; the 2-minute outage is ``python -m bench.faults --channel-down-s 120``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import faults_support as fs
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(200)
def test_channel_down_20s_then_back_loses_nothing(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    r = fs.channel_down(make_settings, tmp_path, down_s=20)
    print(f"\n{fs.HEADER}\n{r.row()}\n  {r.detail}")
    assert r.notifications_lost == 0 and r.duplicates == 0 and r.recovery_s is not None, r.detail
    assert all(r.extra["alive"].values()) and not r.extra["tracebacks"], r.detail
