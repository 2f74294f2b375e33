"""What each hostile case costs ingest in memory: fetch, parse and normalize, without Kafka or the other stages.

    python -m bench.hostile.memory            # each case alone, the largest peaks first
    python -m bench.hostile.memory --together # every case as bench.hostile runs them: 8 fetches, 2 parse threads

The cases are served from a child process, so this process holds what an ingest worker holds: its imports
(``ingest.worker``), then the real ``HttpFetcher``, ``parse`` and ``normalize``. Alone, each case's peak is
VmHWM over VmRSS just before it (the high-water mark is reset through ``/proc/self/clear_refs``); together,
RSS is sampled every 10 ms and the peak printed with the cases in flight at that moment. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any


def _status() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out


def _serve(q: Queue[Any]) -> None:
    from tests.fixtures.hostile.cases import cases
    from tests.integration.hostile_support import handler
    from tests.integration.ingest_server import FeedServer

    server = FeedServer().start()
    names = []
    for c in cases():
        server.routes[f"/h/{c.name}"] = handler(c)
        names.append(c.name)
    q.put((server.url("/h/"), names))
    time.sleep(3600)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hostile.memory", description=__doc__.split("\n")[0])
    ap.add_argument("--together", action="store_true", help="every case at once, as bench.hostile runs them")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    ctx = mp.get_context("fork")  # before the heavy imports: the server process stays small
    q: Queue[Any] = ctx.Queue()
    child = ctx.Process(target=_serve, args=(q,), daemon=True)
    child.start()
    base_url, names = q.get(timeout=120)

    from ingest import worker  # noqa: F401 - an ingest worker's imports, for its baseline
    from ingest.fetcher import FetchResult, HttpFetcher
    from ingest.normalize import normalize
    from ingest.parser import ParseError, parse
    from wirewatch.settings import Settings

    cfg = Settings(ingest={"fetch_timeout_s": 8, "read_timeout_s": 3, "concurrency": 8,
                           "per_host_concurrency": 8}).ingest
    gc.collect()
    print(f"after ingest's imports: RSS {_status()['VmRSS']:.1f} MiB", flush=True)
    fetcher = HttpFetcher(cfg, guard=False)
    cpu = ThreadPoolExecutor(2, thread_name_prefix="parse")

    def prepare(res: FetchResult) -> str:
        try:
            parsed = parse(res.body, res.headers, res.url)
        except ParseError:
            return "parse failure"
        parsed = replace(parsed, entries=parsed.entries[: cfg.max_entries])
        items, _ = normalize(parsed, feed_url=res.url, identity_feed_url=res.url, feed_id="f", feed_name="n",
                             fetched_at=datetime.now(UTC), cfg=cfg)
        return f"{len(items)} articles"

    inflight: set[str] = set()

    async def one(name: str) -> str:
        inflight.add(name)
        try:
            res = await fetcher.fetch(base_url + name)
            if not res.ok:
                return res.outcome.value
            return await asyncio.get_running_loop().run_in_executor(cpu, prepare, res)
        finally:
            inflight.discard(name)

    async def alone() -> None:
        rows = []
        for name in names:
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")
            before = _status()["VmRSS"]
            outcome = await one(name)
            rows.append((_status()["VmHWM"] - before, name, outcome))
        for peak, name, outcome in sorted(rows, reverse=True)[: a.top]:
            print(f"  +{peak:6.1f} MiB  {name:32s} {outcome}")

    async def together() -> None:
        peak: list[Any] = [0.0, ""]  # MiB, the cases in flight then
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss = _status()["VmRSS"]
                if rss > peak[0]:
                    peak[:] = [rss, ", ".join(sorted(inflight))]
                time.sleep(0.01)

        threading.Thread(target=sample, daemon=True).start()
        slots = asyncio.Semaphore(cfg.concurrency)

        async def limited(name: str) -> str:
            async with slots:
                return await one(name)

        outcomes = await asyncio.gather(*(limited(n) for n in names))
        done.set()
        print("  outcomes:", dict(Counter("articles" if o.endswith("articles") else o for o in outcomes)))
        print(f"  peak RSS {peak[0]:.0f} MiB (VmHWM {_status()['VmHWM']:.0f}) with in flight: {peak[1]}")

    started = time.monotonic()
    asyncio.run(together() if a.together else alone())
    print(f"{len(names)} cases in {time.monotonic() - started:.0f} s")
    child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
