"""Soak: the whole pipeline at steady load for ``--minutes`` after a warm-up, on a stack of its own.

    python -m bench.soak --minutes 30

Feeds serve new entries at ``--rate`` articles/s in total; ingest, classify and alerts run as processes and
every article is notified to a local webhook. The warm-up (``--warmup-s``, 18 minutes) fills every bounded
memory the workers keep, so that the run measures the steady state a production worker reaches after days:
memory that still grows after it is a leak, not a cache filling. Alerts keeps each story's members for
``--story-window-s`` (120 s; production keeps 48 h); classify's embedding cache is ``--embed-cache-size``
vectors (production keeps 50,000, about 85 MB); alerts' local story cache holds 20,000 stories (a constant in
alerts/stories.py), so during the warm-up the feeds serve ``--fill-rate`` (20) articles/s, 21,600 in all
(a rate the pipeline sustains on 2 shared cores; at 60/s a backlog grew by 30 a second). Every
``--sample-s`` the run records each stage's RSS, the error counters (failed fetches, dead letters, failed
sends) and the lag (articles served but not yet notified). After the warm-up it checks RSS growth
under 5 %, error counters flat and lag bounded, prints the samples, the heap keeper's collection pauses and
a verdict, and exits non-zero on a failed check.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import tomllib
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import tomli_w

from tests.integration import faults_support as fs
from tests.integration import ops_support as sup
from tests.integration.alerts_support import Receiver
from tests.integration.guarantee_support import private_stack, private_stack_settings
from tests.integration.ingest_server import FeedServer, respond, rss
from wirewatch import bus

PER_FEED = 5000
WINDOW = 120  # entries in each answer: more than a feed serves between two polls at the fill rate
# Unrelated headlines (random real words), so that no two entries fold into one story and every entry is one
# notification: the lag (served, not yet notified) then counts what the pipeline still owes.
POOL = sup.texts(16 * PER_FEED)


class SteadyFeed:
    """The newest ``WINDOW`` of an endless run of entries: ``fill_per_s`` a second for ``fill_s`` after the
    start, ``per_s`` after that."""

    def __init__(self, n: int, per_s: float, fill_per_s: float, fill_s: float) -> None:
        self.n, self.per_s, self.fill_per_s, self.fill_s = n, per_s, fill_per_s, fill_s
        self.t0 = time.monotonic()

    def text(self, i: int) -> tuple[str, str]:
        return POOL[(self.n * PER_FEED + i) % len(POOL)]

    def served(self) -> int:
        t = time.monotonic() - self.t0
        return int(min(t, self.fill_s) * self.fill_per_s + max(0.0, t - self.fill_s) * self.per_s)

    def __call__(self, h: BaseHTTPRequestHandler) -> None:
        top = self.served()
        items = [{"title": self.text(i)[0], "link": f"https://soak.example/{self.n}/{i}",
                  "description": self.text(i)[1], "pubDate": formatdate(usegmt=True)}
                 for i in range(top, max(-1, top - WINDOW), -1)]
        respond(h, 200, rss(items))


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="the steady run measured after the warm-up")
    ap.add_argument("--rate", type=float, default=4.0, help="articles per second over all feeds")
    ap.add_argument("--warmup-s", type=float, default=1080.0)
    ap.add_argument("--fill-rate", type=float, default=20.0, help="articles per second during the warm-up")
    ap.add_argument("--embed-cache-size", type=int, default=10_000,
                    help="classify.embed_cache_size: vectors kept (50,000 in production), filled in the warm-up")
    ap.add_argument("--feeds", type=int, default=8)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--story-window-s", type=int, default=120,
                    help="alerts.story_window_s: a story's members are kept this long (48 h in production), so a "
                         "steady state is reached within the warm-up; memory then holds window x rate members")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wirewatch-soak-"))
    server = FeedServer().start()
    feeds = [SteadyFeed(i, a.rate / a.feeds, a.fill_rate / a.feeds, a.warmup_s) for i in range(a.feeds)]
    for i, f in enumerate(feeds):
        server.routes[f"/s{i}"] = f
    urls = [server.url(f"/s{i}") for i in range(a.feeds)]
    build = functools.partial(private_stack_settings, work / "data")
    samples: list[dict[str, float]] = []
    alive: dict[str, bool] = {}
    heap: list[str] = []
    with Receiver() as rx:
        s, cfg = fs.pipeline_config(build, work / "soak.toml", subs=fs.channel_subs({"webhook": rx.url}),
                                    alerts={"story_window_s": a.story_window_s},
                                    ingest={"default_interval_s": 2, "min_interval_s": 1, "max_interval_s": 3,
                                            "feeds": [{"url": u, "interval_s": 2} for u in urls]}, topics=False)
        written = tomllib.loads(cfg.read_text())
        written["classify"]["embed_cache_size"] = a.embed_cache_size
        cfg.write_text(tomli_w.dumps(written))
        with private_stack(s):
            bus.ensure_default_topics(s)
            w = fs.Workers(s, cfg, work / "logs")
            try:
                run(a, w, feeds, rx, samples)
                alive = w.alive()
                heap = heap_figures(w)
            finally:
                w.stop()
    server.stop()
    return report(a, samples, alive, heap)


def heap_figures(w: fs.Workers) -> list[str]:
    """What the heap keepers of classify and alerts logged: their collections' pauses and what they found."""
    out = []
    for role in ("classify", "alerts"):
        reports = [e for e in w.events(role, "heap_frozen") if "rounds" in e]  # not start-up's
        if not reports:
            continue
        rounds = sum(int(e["rounds"]) for e in reports)
        gen2 = max(float(e["longest_ms"][2]) for e in reports)
        out.append(f"  heap {role}: {rounds} freezes, each after collecting the unfrozen objects: longest pause "
                   f"{max(float(e['pause_ms']) for e in reports):.1f} ms, {sum(int(e['unreachable']) for e in reports)}"
                   f" unreachable found in all; {sum(int(e['collections'][2]) for e in reports)} generation-2 "
                   f"collections (the keeper's rounds and full passes among them), longest {gen2:.1f} ms")
        for e in w.events(role, "heap_full_collection"):
            out.append(f"  heap {role}: full collection, pause {e['pause_ms']} ms, {e['unreachable']} unreachable")
    return out


def run(a: argparse.Namespace, w: fs.Workers, feeds: list[SteadyFeed], rx: Receiver,
        samples: list[dict[str, float]]) -> None:
    """Wait for the workers, then sample every ``a.sample_s`` through the warm-up and ``a.minutes``."""
    if not sup.wait_until(w.ready, 120, every_s=0.5):
        raise SystemExit(f"workers not ready; logs in {w.log_dir}")
    start = time.monotonic()
    for f in feeds:
        f.t0 = start
    end = start + a.warmup_s + a.minutes * 60
    while time.monotonic() < end:
        time.sleep(min(a.sample_s, max(0.0, end - time.monotonic())))
        row: dict[str, float] = {"t_s": time.monotonic() - start}
        for role in fs.ROLES:
            row[f"rss_{role}"] = w.memory_mib(role)[0]
        mi, mc, ma = w.metrics("ingest"), w.metrics("classify"), w.metrics("alerts")
        row["fetch_errors"] = fs.total(mi, "wirewatch_ingest_fetches_total") - fs.total(
            mi, "wirewatch_ingest_fetches_total", outcome="200") - fs.total(
            mi, "wirewatch_ingest_fetches_total", outcome="304")
        row["dlq"] = fs.total(mc, "wirewatch_bus_dlq_total") + fs.total(ma, "wirewatch_bus_dlq_total")
        row["send_failures"] = sum(v for k, v in ma.items() if "failed" in k and k.endswith("_total")
                                   or ("status=\"failed\"" in k))
        served = sum(f.served() for f in feeds)
        row["served"], row["notified"] = served, len(rx.accepted)
        row["lag"] = served - len(rx.accepted)
        samples.append(row)
        print(" ".join(f"{k}={v:.0f}" for k, v in row.items()), flush=True)


def report(a: argparse.Namespace, samples: list[dict[str, float]], alive: dict[str, bool], heap: list[str]) -> int:
    """Print the figures after the warm-up and the verdict; 0 when every check held."""
    warm_s = a.warmup_s
    after = [r for r in samples if r["t_s"] >= warm_s] or samples[-1:]
    ok = all(alive.values())
    print(f"\nsoak {a.minutes:g} min at {a.rate:g} articles/s over {a.feeds} feeds after a {warm_s:.0f} s warm-up "
          f"at {a.fill_rate:g}/s; workers alive {alive}")
    for role in fs.ROLES:
        first, last = after[0][f"rss_{role}"], after[-1][f"rss_{role}"]
        peak = max(r[f"rss_{role}"] for r in after)
        growth = (last - first) / first * 100 if first else 0.0
        ok &= growth < 5
        print(f"  RSS {role}: {first:.0f} MiB after warm-up -> {last:.0f} MiB at the end (peak {peak:.0f}), "
              f"growth {growth:+.1f} %")
    for k in ("fetch_errors", "dlq", "send_failures"):
        flat = after[-1][k] == after[0][k]
        ok &= flat
        print(f"  {k}: {after[0][k]:.0f} after warm-up, {after[-1][k]:.0f} at the end ({'flat' if flat else 'GREW'})")
    lags = [r["lag"] for r in after]
    bounded = max(lags) <= max(50.0, 30 * a.rate)
    ok &= bounded
    print(f"  lag (served, not yet notified): max {max(lags):.0f}, last {lags[-1]:.0f} "
          f"({'bounded' if bounded else 'UNBOUNDED'}); {samples[-1]['notified']:.0f} notifications in all")
    print("\n".join(heap))
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
