"""Ingest benchmark: a local feed farm, the real ``wirewatch ingest`` worker, the real Kafka and Redis.

    python -m bench.ingest [--feeds 10000] [--cycle-s 300] [--steady-s CYCLE] [--publish-rate R]
    python -m bench.ingest --feeds 500 --cycle-s 30        # a quick run (about two minutes)

1. Starts a private Kafka + redis-server (free ports, temp dir) unless --bootstrap/--redis are given, the feed
   farm (bench/ingest/farm.py) in its own process, registers N feeds and starts ``wirewatch ingest``
   as a subprocess (its CPU and RSS are read from /proc, the farm's and this process's are not counted).
2. First full round: every feed answers 200 with 50 items; timed until all N x 50 articles are on Kafka.
3. Steady state for one cycle (every feed polled about once; most answer 304) while the farm publishes
   ``--publish-rate`` new items per second to random feeds: fetches/s, CPU per 1,000 fetches, RSS, and the
   latency from an item appearing on the farm to its Kafka acknowledgement (the record's CreateTime).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench import machine

ROOT = Path(__file__).resolve().parents[2]
CLK = os.sysconf("SC_CLK_TCK")
APPEARED = re.compile(r"appeared=(\d+\.\d+)")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mib(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
    return rss / 1024, hwm / 1024


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("wirewatch_ingest_fetches_total{"):
            out[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


_last_progress = [0.0]


def progress(msg: str, force: bool = False) -> None:
    now = time.monotonic()
    if force or now - _last_progress[0] >= 1.0:
        _last_progress[0] = now
        sys.stderr.write(f"\r{msg:<100}")
        sys.stderr.flush()


def write_config(path: Path, s: Any, args: argparse.Namespace, metrics_port: int) -> None:
    path.write_text(f"""
data_dir = "{s.data_dir}"
[stack]
kafka_port = {s.stack.kafka_port}
controller_port = {s.stack.controller_port}
redis_port = {s.stack.redis_port}
[kafka]
{'bootstrap_servers = "' + args.bootstrap + '"' if args.bootstrap else ''}
partitions = 6
[kafka.topics]
articles = "{s.kafka.topics.articles}"
[redis]
key_prefix = "{s.redis.key_prefix}"
{'url = "' + args.redis + '"' if args.redis else ''}
[log]
level = "warning"
format = "json"
[api]
url_allowlist = ["127.0.0.1"]
[ingest]
min_interval_s = {args.cycle_s}
max_interval_s = {args.cycle_s}
default_interval_s = {args.cycle_s}
jitter = 0.1
concurrency = {args.concurrency}
per_host_concurrency = {args.concurrency}
metrics_port = {metrics_port}
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feeds", type=int, default=10000)
    ap.add_argument("--cycle-s", type=float, default=300.0, help="poll interval of every feed")
    ap.add_argument("--steady-s", type=float, default=None, help="steady-state window (default: one cycle)")
    ap.add_argument("--publish-rate", type=float, default=None,
                    help="new items per second during steady state (default: 3%% of feeds per cycle)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--bootstrap", default=None, help="existing Kafka (default: a private local one)")
    ap.add_argument("--redis", default=None, help="existing Redis URL (default: a private local one)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables on stderr)")
    args = ap.parse_args()
    machine.report(args.json, lambda: bench(args))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    print(machine.line(), flush=True)
    steady_s = args.steady_s or args.cycle_s
    rate = args.publish_rate if args.publish_rate is not None else 0.03 * args.feeds / args.cycle_s

    from wirewatch import bus, stack
    from wirewatch import registry as regmod
    from wirewatch import state as wstate
    from wirewatch.identity import feed_id
    from wirewatch.records import Feed
    from wirewatch.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="ww-bench-ingest-"))
    ns = f"bench{int(time.time())}"
    over: dict[str, Any] = {"data_dir": str(tmp), "redis": {"key_prefix": f"{ns}:"},
                            "kafka": {"topics": {"articles": f"{ns}.articles"}, "partitions": 6},
                            "stack": {"kafka_port": stack.free_port(), "controller_port": stack.free_port(),
                                      "redis_port": stack.free_port()},
                            "log": {"level": "warning", "format": "console"}}
    if args.bootstrap:
        over["kafka"]["bootstrap_servers"] = args.bootstrap
    if args.redis:
        over["redis"]["url"] = args.redis
    s = load_settings(None, **over)
    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.monotonic()
    try:
        progress("starting Kafka and Redis...")
        stack.up(s)
        bus.ensure_topics(s, {s.kafka.topics.articles: 6})
        farm_port = stack.free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.ingest.farm", "--feeds", str(args.feeds),
                                       "--port", str(farm_port)], cwd=ROOT, env=env))
        progress(f"registering {args.feeds} feeds...")
        client = wstate.connect(s)
        reg = regmod.feeds(client, s)
        for i in range(args.feeds):
            url = f"http://127.0.0.1:{farm_port}/f/{i}"
            reg.put(Feed(id=feed_id(url), url=url, name=f"Farm {i}"))
        metrics_port = stack.free_port()
        cfg = tmp / "ingest.toml"
        write_config(cfg, s, args, metrics_port)
        log = (tmp / "ingest.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-c", "from wirewatch.cli import main; main()", "--config",
                                   str(cfg), "ingest"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(worker)
        consumer = KafkaConsumer(bootstrap_servers=s.bootstrap_servers, enable_auto_commit=False,
                                 auto_offset_reset="earliest", fetch_max_bytes=64 << 20)
        topic = s.kafka.topics.articles
        parts = [TopicPartition(topic, p) for p in range(6)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)

        # -- first round --------------------------------------------------------------------------------
        want = args.feeds * 50
        keys: set[bytes] = set()
        started = time.monotonic()
        cpu0 = cpu_s(worker.pid)
        while len(keys) < want:
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}; see {tmp / 'ingest.log'}")
            for recs in consumer.poll(timeout_ms=500, max_records=20000).values():
                keys.update(r.key for r in recs)
            el = time.monotonic() - started
            progress(f"first round: {len(keys)}/{want} articles on Kafka, {el:.0f}s")
            if el > max(600.0, args.cycle_s * 2):
                raise SystemExit(f"first round incomplete after {el:.0f}s ({len(keys)}/{want})")
        first_round_s = time.monotonic() - started
        first_cpu = cpu_s(worker.pid) - cpu0
        rss_first, hwm_first = rss_mib(worker.pid)

        # -- steady state -------------------------------------------------------------------------------
        urllib.request.urlopen(f"http://127.0.0.1:{farm_port}/_start?rate={rate}", timeout=5).read()
        m0, cpu1, t1 = scrape(metrics_port), cpu_s(worker.pid), time.monotonic()
        lat_appear: list[float] = []
        lat_fetch: list[float] = []
        dupes = 0

        def collect() -> None:
            nonlocal dupes
            for recs in consumer.poll(timeout_ms=500).values():
                for r in recs:
                    if r.key in keys:
                        dupes += 1
                        continue
                    keys.add(r.key)
                    doc = json.loads(r.value)
                    m = APPEARED.search(doc.get("summary", ""))
                    if m:
                        ack = r.timestamp / 1000
                        lat_appear.append(ack - float(m.group(1)))
                        lat_fetch.append(ack - datetime.fromisoformat(doc["fetched_at"]).timestamp())

        while time.monotonic() - t1 < steady_s:
            collect()
            progress(f"steady state: {time.monotonic() - t1:.0f}/{steady_s:.0f}s, {len(lat_appear)} new items on Kafka")
        steady_el = time.monotonic() - t1
        m1, cpu2 = scrape(metrics_port), cpu_s(worker.pid)
        fetches = sum(m1.values()) - sum(m0.values())
        n304 = m1.get("304", 0) - m0.get("304", 0)
        steady_cpu = cpu2 - cpu1
        rss_now, hwm = rss_mib(worker.pid)
        # Items published late in the window appear at their feed's next poll: stop publishing, wait for them.
        urllib.request.urlopen(f"http://127.0.0.1:{farm_port}/_start?rate=0", timeout=5).read()
        farm_stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{farm_port}/_stats", timeout=5).read())
        drain_until = time.monotonic() + args.cycle_s * 1.2 + 10
        while len(lat_appear) < farm_stats["new_items"] and time.monotonic() < drain_until:
            collect()
            progress(f"draining: {len(lat_appear)}/{farm_stats['new_items']} published items on Kafka")
        sys.stderr.write("\n")

        rows = [
            ("feeds x items", f"{args.feeds} x 50", ""),
            ("poll cycle", f"{args.cycle_s:g} s", "min = max interval"),
            ("first full round", f"{first_round_s:.1f} s", f"{want} articles parsed, normalized, produced, acked"),
            ("items/s, first round (wall)", f"{want / first_round_s:,.0f}", "fetch+parse+normalize+dedup+produce"),
            ("items per CPU-second", f"{want / max(first_cpu, 1e-9):,.0f}", f"worker CPU {first_cpu:.1f} s"),
            ("steady fetches/s", f"{fetches / steady_el:.1f}",
             f"{fetches:.0f} fetches in {steady_el:.0f} s, {100 * n304 / max(fetches, 1):.1f}% 304"),
            ("CPU per 1,000 fetches", f"{1000 * steady_cpu / max(fetches, 1):.2f} s",
             f"worker CPU {steady_cpu:.1f} s = {100 * steady_cpu / steady_el:.1f}% of one core"),
            ("RSS (now / peak)", f"{rss_now:.0f} / {hwm:.0f} MiB", f"after first round {rss_first:.0f} MiB"),
            ("new items on Kafka", f"{len(lat_appear)} of {farm_stats['new_items']}",
             f"published at {rate:.2f}/s during the window; {dupes} repeats"),
            ("appearance -> Kafka ack p50", f"{pct(lat_appear, 0.5):.1f} s", "includes waiting for the next poll"),
            ("appearance -> Kafka ack p99", f"{pct(lat_appear, 0.99):.1f} s",
             f"target < 2 s + poll interval ({args.cycle_s:g} s)"),
            ("fetch -> Kafka ack p50 / p99", f"{pct(lat_fetch, 0.5):.3f} / {pct(lat_fetch, 0.99):.3f} s",
             "the part ingest controls"),
        ]
        core_share = steady_cpu / steady_el
        delivered = len(lat_appear) / max(farm_stats["new_items"], 1)
        print("\nratios, same run: steady CPU / half-core target "
              f"{core_share / 0.5:.2f}; new items on Kafka / published {delivered:.3f}; "
              f"304 share of fetches {n304 / max(fetches, 1):.3f}; first round items/s per CPU-s vs wall "
              f"{(want / max(first_cpu, 1e-9)) / (want / first_round_s):.2f}")
        doc = {"bench": "ingest", "feeds": args.feeds, "cycle_s": args.cycle_s,
               "first_round_items_per_s": want / first_round_s, "items_per_cpu_s": want / max(first_cpu, 1e-9),
               "steady_fetches_per_s": fetches / steady_el, "steady_core_share": core_share,
               "core_share_vs_target": core_share / 0.5, "share_304": n304 / max(fetches, 1),
               "cpu_s_per_1000_fetches": 1000 * steady_cpu / max(fetches, 1), "rss_mib": rss_now,
               "rss_peak_mib": hwm, "new_items": farm_stats["new_items"], "new_items_on_kafka": len(lat_appear),
               "repeats": dupes, "appear_to_ack_p50_s": pct(lat_appear, 0.5),
               "appear_to_ack_p99_s": pct(lat_appear, 0.99), "fetch_to_ack_p50_s": pct(lat_fetch, 0.5),
               "fetch_to_ack_p99_s": pct(lat_fetch, 0.99)}
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        print(f"\nIngest benchmark ({os.cpu_count()} cores, total {time.monotonic() - t0:.0f} s)")
        print(f"{'metric':<{w0}}  {'value':>{w1}}  note")
        print(f"{'-' * w0}  {'-' * w1}  {'-' * 40}")
        for name, value, note in rows:
            print(f"{name:<{w0}}  {value:>{w1}}  {note}")
        if args.feeds == 10000 and args.cycle_s == 300:
            print(f"\ntarget: 10,000 feeds on a 5-minute cycle under half a core: "
                  f"{'met' if steady_cpu / steady_el < 0.5 else 'NOT met'}; under 1 GiB RSS: "
                  f"{'met' if hwm < 1024 else 'NOT met'}")
        consumer.close()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        stack.down(s)  # stops only what it started; external servers are left alone
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


if __name__ == "__main__":
    main()
