"""Hostile feeds (a fixed sample of tests/fixtures/hostile/cases.py) through the real ingest, classify and
alerts processes to local Slack, Teams and webhook receivers: no crash, ingest RSS under 300 MB, every
case a counted and logged outcome, nothing at any channel that its renderer would act on.

Every case (over 200) runs with ``python -m bench.hostile``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.hostile.cases import cases, sample
from tests.integration import hostile_support as hs
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_there_are_over_200_cases_with_unique_names() -> None:
    every = cases()
    assert len(every) >= 200
    assert len({c.name for c in every}) == len(every)


@pytest.mark.timeout(300)
def test_hostile_sample_goes_through_to_every_channel_escaped(make_settings: Callable[..., Settings],
                                                              tmp_path: Path) -> None:
    picked = sample(40)
    rep = hs.run(picked, make_settings, tmp_path, timeout_s=200)
    print("\nhostile sample: " + rep.summary())
    assert all(rep.alive.values()) and not rep.tracebacks and rep.crashed_polls == 0, rep.log_dir
    assert rep.rss_peak_mib["ingest"] < 300
    assert not rep.unlogged, rep.unlogged
    assert rep.fetches_counted >= len(picked)
    assert not rep.unexpected, rep.unexpected
    assert rep.problems == [], rep.problems[:10]
    assert rep.notified["webhook"] == rep.notified["slack"] == rep.notified["teams"] >= 25
