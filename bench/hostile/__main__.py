"""Every hostile feed case (tests/fixtures/hostile/cases.py, over 200) through the real pipeline on a stack
of its own, to local Slack, Teams and webhook receivers.

    python -m bench.hostile            # every case
    python -m bench.hostile --sample 40

Prints the outcome of each case group, the counters, peak RSS per stage and every escaping problem found;
exits non-zero when a check of the suite's hostile test fails.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

from tests.fixtures.hostile.cases import cases, sample
from tests.integration import hostile_support as hs
from tests.integration.guarantee_support import private_stack, private_stack_settings
from wirewatch import bus


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=0, help="run a fixed sample of about this many cases")
    ap.add_argument("--timeout-s", type=float, default=1200)
    a = ap.parse_args()
    picked = sample(a.sample) if a.sample else cases()
    work = Path(tempfile.mkdtemp(prefix="wirewatch-hostile-"))
    s0 = private_stack_settings(work / "data")
    with private_stack(s0):
        bus.ensure_default_topics(s0)
        build = functools.partial(private_stack_settings, work / "data", stack=s0.stack.model_dump())
        rep = hs.run(picked, build, work, timeout_s=a.timeout_s)
    print(rep.summary())
    for p in rep.problems[:50]:
        print("  problem:", p)
    for u in rep.unexpected + [f"{n}: no logged outcome" for n in rep.unlogged]:
        print("  unexpected:", u)
    ok = (all(rep.alive.values()) and not rep.tracebacks and rep.crashed_polls == 0 and not rep.unlogged
          and not rep.unexpected and not rep.problems and rep.rss_peak_mib.get("ingest", 0) < 300
          and rep.fetches_counted >= len(picked)
          and rep.notified["webhook"] == rep.notified["slack"] == rep.notified["teams"] > 0)
    print("verdict:", "PASS" if ok else "FAIL", f"(logs in {rep.log_dir})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
