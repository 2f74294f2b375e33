"""The fault scenarios of tests/integration/test_faults_*.py on a stack of their own, as one table.

    python -m bench.faults                       # channel down 120 s (the suite runs 20 s)
    python -m bench.faults --channel-down-s 20 --only channel

Columns: articles lost, notifications lost, duplicates outside the acknowledged window (one story notified
under two idempotency keys), recovery time. Exits non-zero unless every row is 0 / 0 / 0 and recovered.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.integration import faults_support as fs
from tests.integration.guarantee_support import private_stack, private_stack_settings
from wirewatch.settings import Settings


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n")[0])
    ap.add_argument("--channel-down-s", type=float, default=120.0)
    ap.add_argument("--only", action="append", choices=("redis-ingest", "redis-alerts", "channel", "stall"))
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wirewatch-faults-"))
    s0 = private_stack_settings(work / "data")
    Scenario = Callable[[Callable[..., Settings], Path], fs.FaultResult]
    runs: dict[str, Scenario] = {"redis-ingest": fs.redis_restart_under_ingest,
                                 "redis-alerts": fs.redis_restart_under_alerts,
            "channel": functools.partial(fs.channel_down, down_s=a.channel_down_s), "stall": fs.feed_stall}
    results = []
    with private_stack(s0):
        for name, scenario in runs.items():
            if a.only and name not in a.only:
                continue
            (work / name).mkdir()
            topics = {t: f"{name}.{t}" for t in ("articles", "matches", "deliveries")}
            build = functools.partial(private_stack_settings, work / "data", stack=s0.stack.model_dump(),
                                      kafka={"partitions": 3, "topics": topics}, redis={"key_prefix": f"{name}:"})
            results.append(scenario(build, work / name))
            print(results[-1].row(), flush=True)
    print("\n" + fs.HEADER)
    for r in results:
        print(r.row())
    for r in results:
        print(f"  {r.name}: {r.detail}")
    ok = all(r.articles_lost in (0, None) and r.notifications_lost in (0, None) and r.duplicates == 0
             and r.recovery_s is not None for r in results)
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
