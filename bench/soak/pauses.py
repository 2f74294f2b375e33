"""The pause the heap keeper's collection costs: what it walks is what survived since the last freeze.

    python -m bench.soak.pauses [--rates 4,200] [--intervals 5,60]

Imports the classify and alerts workers (their start-up heap), freezes it as ``HeapKeeper.start`` does, then
for each rate and freeze interval keeps what alerts keeps per match over one interval (a story with its
article reference, a story-index member with its text fingerprint) and times ``gc.collect()`` over the
unfrozen objects, the keeper's collection before a freeze, against a full collection over the start-up
heap too (what CPython's own generation-2 collections walk without freezing). Medians of five.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np


def _survivors(n: int) -> list[Any]:
    from alerts.fingerprint import Print
    from alerts.stories import Story
    from alerts.storyindex import Member

    now = datetime.now(UTC)
    out: list[Any] = []
    vec = np.zeros(384, dtype=np.float32)
    for i in range(n):
        title = f"Ministry harbour election drought number {i} vaccine pipeline bridge strike"
        ref: dict[str, str | None] = {"id": f"a{i}", "title": title, "url": f"https://x.example/{i}",
                                      "source": "Outlet", "published_at": now.isoformat()}
        out.append(Story(id=f"s{i}", topic_id="t1", title=title, url=ref["url"], summary="", first_article_id=f"a{i}",
                         article_ids=(f"a{i}",), sources=("Outlet",), article_count=1, created_at=now,
                         updated_at=now, articles=(ref,)))
        out.append(Member(f"s{i}", vec, Print.of(title), i))
    return out


def _median_ms(fn: Any) -> float:
    times = []
    for _ in range(5):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak.pauses", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="4,200", help="matches per second")
    ap.add_argument("--intervals", default="5,60", help="freeze intervals, seconds")
    a = ap.parse_args()
    import alerts.worker  # noqa: F401 - the start-up heap of a worker
    import classify.worker  # noqa: F401

    gc.collect()
    gc.freeze()
    print(f"start-up heap: {gc.get_freeze_count()} objects frozen")
    print(f"{'matches/s':>9} {'interval s':>10} {'unfrozen objects':>16} {'keeper ms':>9} {'full ms':>8}")
    for rate in (float(r) for r in a.rates.split(",")):
        for interval in (float(i) for i in a.intervals.split(",")):
            kept = _survivors(int(rate * interval))
            gc.collect()
            unfrozen = len(gc.get_objects())
            keeper = _median_ms(gc.collect)
            gc.unfreeze()
            full = _median_ms(gc.collect)
            gc.freeze()
            print(f"{rate:9g} {interval:10g} {unfrozen:16d} {keeper:9.1f} {full:8.1f}", flush=True)
            gc.unfreeze()
            del kept
            gc.collect()
            gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
