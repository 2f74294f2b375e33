"""Alerts benchmark: the real alerts worker on the real Kafka and Redis, 1,000 subscriptions, a local webhook.

    python -m bench.alerts [--subscriptions 1000] [--topics 200] [--matches 3000] [--rate 200] [--seconds 15]

1. Starts a private Kafka + redis-server (free ports, temp dir), a webhook receiver in its own process
   (HTTP/1.1 keep-alive), and the alerts worker in this process with N webhook subscriptions spread over
   the topics, each with its own URL and a min_score, so a match reaches about two of its topic's five.
   Matches carry 384-dimensional unit vectors like classify's; one in five is a copy of a recent story
   from another outlet (it folds and is suppressed).
2. Throughput: M matches produced up front, then timed from the first batch to the last notification
   acknowledged: matches/s through folding, rules, outbox, ledger and send.
3. Latency: matches produced at --rate per second for --seconds by a feeder process of its own (as classify
   is one in production; see ``bench/alerts/feed.py``); per notification, the time from its
   match being consumed (the batch handed to the pipeline) to the receiver's acknowledgement, and from
   produce to acknowledgement. Target: p99 added latency under 50 ms at 200 matches/s. A table splits the
   loop's time per batch into its steps (waiting for the batch, folding, the outbox write, the audit
   records' acknowledgement, the commit), which is where a latency that grows comes from.
4. Folding on a busy topic (in process, no servers): the time to find an article's closest story member
   among --fold-members members of one topic, the vectorised index side by side with a one-by-one scan.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from alerts.fingerprint import Print, similarity  # noqa: E402
from alerts.outbox import Entry  # noqa: E402
from alerts.storyindex import Member, TopicIndex  # noqa: E402
from alerts.worker import AlertsWorker  # noqa: E402
from bench import machine  # noqa: E402
from bench.alerts.feed import WORDS, Feeder  # noqa: E402
from wirewatch import bus, stack  # noqa: E402
from wirewatch.bus import Producer  # noqa: E402
from wirewatch.log import configure  # noqa: E402
from wirewatch.records import ChannelKind, ChannelSpec, Subscription  # noqa: E402
from wirewatch.settings import Settings, load_settings  # noqa: E402

MIN_SCORES = (0.5, 0.7, 0.8, 0.9, 0.95)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def subscriptions(n: int, topics: int, url: str) -> list[dict[str, Any]]:
    subs = []
    for i in range(n):
        spec = ChannelSpec(type=ChannelKind.WEBHOOK, target=f"{url}/hook/{i}", secret="bench-secret")
        subs.append(Subscription(id=f"s{i}", topic_id=f"t{i % topics}", channel=spec,
                                 min_score=MIN_SCORES[(i // topics) % len(MIN_SCORES)]).model_dump(mode="json"))
    return subs


def received(port: int) -> int:
    return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5).read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscriptions", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--matches", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--send-workers", type=int, default=None, help="alerts.send_workers (default: the setting's)")
    ap.add_argument("--switch-interval-ms", type=float, default=None, help="sys.setswitchinterval for the worker")
    ap.add_argument("--fold-members", default="1000,5000,20000", help="members per topic for the folding table")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables on stderr)")
    args = ap.parse_args()
    machine.report(args.json, lambda: bench(args))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    print(machine.line(), flush=True)
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    configure("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="ww-bench-alerts-"))
    recv_port = stack.free_port()
    base: dict[str, Any] = {"data_dir": str(tmp), "log": {"level": "warning", "format": "console"},
                            "api": {"url_allowlist": ["127.0.0.1"]},  # the receiver is on loopback
                            "stack": {"kafka_port": stack.free_port(), "controller_port": stack.free_port(),
                                      "redis_port": stack.free_port()}}
    s0 = load_settings(None, **base)
    print(f"starting Kafka and Redis in {tmp} ...", flush=True)
    stack.up(s0)
    receiver = subprocess.Popen([sys.executable, "-m", "bench.alerts.receiver", str(recv_port)])
    try:
        settings = load_settings(None, **base, alerts={
            "subscriptions": subscriptions(args.subscriptions, args.topics, f"http://127.0.0.1:{recv_port}"),
            "metrics_port": None, **({"send_workers": args.send_workers} if args.send_workers else {})})
        bus.ensure_default_topics(settings)
        doc = run(settings, base, args, recv_port)
    finally:
        receiver.terminate()
        receiver.wait(10)
        stack.down(s0)
        shutil.rmtree(tmp, ignore_errors=True)
    doc["fold"] = fold_scaling([int(n) for n in args.fold_members.split(",") if n.strip()])
    return doc


def fold_scaling(sizes: list[int], queries: int = 40) -> list[dict[str, Any]]:
    """Closest-member search on one busy topic: the numpy index against the one-by-one scan."""
    out: list[dict[str, Any]] = []
    if not sizes:
        return out
    rng, nrng = random.Random(3), np.random.default_rng(3)

    def article() -> tuple[Print, np.ndarray]:
        v = nrng.normal(0, 1, 384).astype(np.float32)
        return Print.of(" ".join(rng.sample(WORDS, 8)).capitalize()), v / np.linalg.norm(v)

    print()
    print(f"{'folding: members per topic':<28}{'index ms/match':>16}{'scan ms/match':>16}{'speed-up':>10}{'same':>6}")
    print("-" * 76)
    for n in sizes:
        index = TopicIndex()
        for i in range(n):
            fp, v = article()
            index.add(Member(f"s{i}", v, fp, i))
        probes = [article() for _ in range(queries // 2)]  # new events, and copies of known ones (they fold)
        for m in rng.sample(index.members, queries - len(probes)):
            assert m.vector is not None
            v = m.vector + nrng.normal(0, 0.02, 384).astype(np.float32)
            probes.append((m.fp, v / np.linalg.norm(v)))
        index.best(*probes[0], 0.6)  # builds the arrays once, as the first batch after a rebuild does
        t0 = time.perf_counter()
        fast = [index.best(fp, v, 0.6) for fp, v in probes]
        t1 = time.perf_counter()
        slow = [max(((similarity(fp, m.fp, float(v @ m.vector)), m) for m in index.members if m.vector is not None),
                    key=lambda x: x[0]) for fp, v in probes]
        t2 = time.perf_counter()
        same = all((fs >= 0.6) == (ss >= 0.6) and (fs < 0.6 or fm is sm or abs(fs - ss) < 1e-9)
                   for (fm, fs), (ss, sm) in zip(fast, slow, strict=True))
        idx_ms, scan_ms = (t1 - t0) / queries * 1000, (t2 - t1) / queries * 1000
        print(f"{n:<28}{idx_ms:>16.3f}{scan_ms:>16.2f}{scan_ms / idx_ms:>9.0f}x{'yes' if same else 'NO':>6}",
              flush=True)
        out.append({"members": n, "index_ms": idx_ms, "scan_ms": scan_ms, "speedup": scan_ms / idx_ms, "same": same})
    return out


class Steps:
    """Wall time of each step of the alerts loop while ``on`` is set: where a notification's latency goes.

    Wraps the worker's own objects (``poll`` waits for a batch, ``fold`` finds stories, ``outbox`` writes and
    claims the sends, ``audit`` produces the suppressions and waits for Kafka, ``commit`` commits the offsets);
    ``handle`` is the whole batch, the rules included. The sends themselves run on their own threads.
    """

    NAMES = ("poll", "fold", "outbox", "audit", "commit", "handle")

    def __init__(self) -> None:
        self.on = False
        self.took: dict[str, list[float]] = {n: [] for n in self.NAMES}
        self.sizes: list[int] = []

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        inner = getattr(obj, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.monotonic()
            try:
                return inner(*a, **kw)
            finally:
                # the loop's own calls only: the recorder's thread produces the sent records the same way
                if self.on and threading.current_thread().name != "alerts-recorder":
                    self.took[name].append(time.monotonic() - t0)

        setattr(obj, attr, timed)

    def table(self) -> list[dict[str, Any]]:
        print()
        print(f"{'alerts loop, latency run: step (poll = waiting for a batch)':<60}{'p50 ms':>10}{'p99 ms':>10}"
              f"{'batches':>10}")
        print("-" * 90)
        out = []
        for name in self.NAMES:
            v = self.took[name]
            row = {"step": name, "p50_ms": pct(v, 50) * 1000, "p99_ms": pct(v, 99) * 1000, "n": len(v)}
            print(f"{name:<60}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}{len(v):>10}")
            out.append(row)
        print(f"{'matches per batch (p50 / p99)':<60}{pct(self.sizes, 50):>10.0f}{pct(self.sizes, 99):>10.0f}")
        return out


def run(settings: Settings, base: dict[str, Any], args: argparse.Namespace, recv_port: int) -> dict[str, Any]:
    lat_added: list[float] = []
    acks: list[tuple[str, float]] = []  # (article id, acknowledged at) in the latency run
    feeder = Feeder(args.topics)
    phase = {"latency": False}
    acked = [0]

    def on_sent(entry: Entry, ack: float, consumed: float | None) -> None:
        acked[0] += 1
        if phase["latency"] and consumed is not None:
            lat_added.append(ack - consumed)
            acks.append((entry.notification.article_ids[0], ack))

    worker = AlertsWorker(settings, on_sent=on_sent)
    handled = {"first": 0.0, "matches": 0}
    inner = worker.loop._handle

    steps = Steps()

    def timed(batch: list[Any]) -> Any:
        if not handled["first"]:
            handled["first"] = time.monotonic()
        if steps.on:
            steps.sizes.append(len(batch))
        out = inner(batch)
        handled["matches"] += len(batch)
        return out

    worker.loop._handle = timed
    steps.wrap(worker.loop._poller, "batch", "poll")
    steps.wrap(worker.stories, "fold", "fold")
    steps.wrap(worker.dispatcher, "accept", "outbox")
    steps.wrap(worker.recorder, "record_now", "audit")
    steps.wrap(worker.loop, "_commit", "commit")
    steps.wrap(worker.loop, "_handle", "handle")
    producer = Producer(settings, client_id="bench")
    print(f"throughput: producing {args.matches} matches for {args.subscriptions} subscriptions "
          f"on {args.topics} topics ...", flush=True)
    feeder.produce(producer, settings, args.matches)
    thread = threading.Thread(target=worker.run, daemon=True)
    cpu0 = time.process_time()
    thread.start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if handled["matches"] >= args.matches and worker.dispatcher.idle() and worker.dispatcher.pending() == 0:
            break
        time.sleep(0.05)
    took = time.monotonic() - handled["first"]
    cpu_tp = time.process_time() - cpu0
    sent_tp = acked[0]
    print(f"  {handled['matches']} matches, {sent_tp} notifications acknowledged in {took:.1f}s", flush=True)

    print(f"latency: {args.rate:.0f} matches/s for {args.seconds:.0f}s, produced by a process of its own ...",
          flush=True)
    phase["latency"] = True
    steps.on = True
    load_before = os.getloadavg()[0]
    before = handled["matches"]
    spec = Path(tempfile.mkstemp(prefix="ww-bench-feed-", suffix=".json")[1])
    out = spec.with_suffix(".out.json")
    spec.write_text(json.dumps({"base": base, "topics": args.topics, "first": feeder.n, "rate": args.rate,
                                "seconds": args.seconds}))
    try:
        subprocess.run([sys.executable, "-m", "bench.alerts.feed", str(spec), str(out)], check=True,
                       timeout=args.seconds + 120)
        fed = json.loads(out.read_text())
    finally:
        spec.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    produced_at: dict[str, float] = fed["produced_at"]
    offered_rate = fed["offered_per_s"]
    total = fed["offered"]
    start = min(produced_at.values(), default=time.monotonic())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (handled["matches"] - before >= total and worker.dispatcher.idle()):
        time.sleep(0.05)
    achieved = (handled["matches"] - before) / (time.monotonic() - start)
    lat_e2e = [ack - produced_at[aid] for aid, ack in acks if aid in produced_at]
    load_after = os.getloadavg()[0]
    worker.stop()
    thread.join(60)
    producer.close()

    p99_ms = pct(lat_added, 99) * 1000
    print()
    print(f"{'alerts benchmark: ratios, same run':<48}{'value':>14}")
    print("-" * 62)
    print(f"{'handled / offered matches/s (latency run)':<48}{achieved / args.rate:>14.2f}")
    print(f"{'added-latency p99 / 50 ms target':<48}{p99_ms / 50:>14.2f}")
    print(f"{'notifications per match (throughput run)':<48}{sent_tp / args.matches:>14.2f}")
    print()
    print(f"{'alerts benchmark':<48}{'value':>14}")
    print("-" * 62)
    rows = [
        ("subscriptions / topics / send workers",
         f"{args.subscriptions} / {args.topics} / {settings.alerts.send_workers}"),
        ("alerts.batch_size / alerts.max_wait_ms", f"{settings.alerts.batch_size} / {settings.alerts.max_wait_ms}"),
        ("throughput: matches", f"{args.matches}"),
        ("throughput: notifications acknowledged", f"{sent_tp}"),
        ("throughput: matches/s (fold, rules, ledger, send)", f"{args.matches / took:.0f}"),
        ("throughput: notifications/s", f"{sent_tp / took:.0f}"),
        ("worker CPU per match (all threads, incl. sends), ms", f"{cpu_tp / args.matches * 1000:.2f}"),
        ("worker CPU per notification sent, ms", f"{cpu_tp / max(1, sent_tp) * 1000:.2f}"),
        ("CPUs / load average during the latency run", f"{os.cpu_count()} / {load_before:.1f}-{load_after:.1f}"),
        ("latency run: offered / handled matches/s", f"{offered_rate:.0f} / {achieved:.0f}"),
        ("latency run: notifications", f"{len(lat_added)}"),
        ("added latency p50 (consumed -> acked), ms", f"{pct(lat_added, 50) * 1000:.1f}"),
        ("added latency p99 (consumed -> acked), ms", f"{pct(lat_added, 99) * 1000:.1f}"),
        ("added latency max, ms", f"{max(lat_added, default=float('nan')) * 1000:.1f}"),
        ("produce -> acked p50, ms", f"{pct(lat_e2e, 50) * 1000:.1f}"),
        ("produce -> acked p99, ms", f"{pct(lat_e2e, 99) * 1000:.1f}"),
        ("p99 target 50 ms: ratio p99 / target", f"{pct(lat_added, 99) * 1000 / 50:.2f}"),
        ("receiver count (all phases)", f"{received(recv_port)}"),
    ]
    for name, value in rows:
        print(f"{name:<48}{value:>14}")
    step_rows = steps.table()
    return {"bench": "alerts", "steps": step_rows, "max_wait_ms": settings.alerts.max_wait_ms,
            "subscriptions": args.subscriptions, "topics": args.topics,
            "matches_per_s": args.matches / took, "notifications_per_s": sent_tp / took,
            "cpu_ms_per_match": cpu_tp / args.matches * 1000, "offered_per_s": offered_rate,
            "handled_per_s": achieved, "handled_vs_offered": achieved / args.rate,
            "added_p50_ms": pct(lat_added, 50) * 1000, "added_p99_ms": p99_ms, "p99_vs_target": p99_ms / 50,
            "produce_to_ack_p99_ms": pct(lat_e2e, 99) * 1000, "load_avg": [load_before, load_after]}


if __name__ == "__main__":
    main()
