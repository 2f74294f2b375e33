"""End-to-end benchmark: a feed farm -> ingest -> Kafka -> classify -> Kafka -> alerts -> a webhook, all real.

    .venv/bin/python -m bench.e2e [--articles 600] [--feeds 30] [--configs onnx-int8:1 onnx-int8:2 ...] [--json]
    .venv/bin/python -m bench.e2e --articles 60 --configs auto:1 --latency-rate 0     # a quick run

Starts a private Kafka (KRaft) + redis-server once (free ports, temp dir), a feed farm and a webhook receiver
in this process, and for each configuration ``BACKEND:N`` the real ``wirewatch ingest``, N ``wirewatch
classify`` and one ``wirewatch alerts`` as processes, on their own Kafka topics and Redis prefix. When every
worker holds its partitions, the farm releases ``--articles`` items (BBC titles and first sentences from
../shared/eval/dev when present) over ``--feeds`` feeds all at once, a backlog: articles/s is the sustained rate
from the first fetch until the classify group has committed everything (and until the last notification).
Then, for the first configuration, a paced run at ``--latency-rate`` items/s (default: half the measured rate)
gives the hop latencies of a pipeline that keeps up. Topics are examples/bbc_topics.toml; each has one
instant webhook subscription (min_score 0: every match is due); stories never fold (story_similarity 1.0),
so each due (subscription, article) must be notified exactly once.

Lost = items the farm served that never reached Kafka + articles the classify group never committed + due
notifications neither received nor recorded as suppressed on the deliveries topic (the alerts rules' own
decision, e.g. a story already notified, counted apart); it must be 0. Hops (per article, from the records):
appear -> fetched (poll wait and fetch), fetched -> on Kafka (ingest), on Kafka -> classified (queue and
embedding), classified -> notified (alerts and the webhook), and fetched -> notified, the part the pipeline
controls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tomli_w  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

from bench import machine  # noqa: E402
from bench.e2e.farm import Farm, load_items  # noqa: E402
from wirewatch import bus, stack  # noqa: E402
from wirewatch.demo.receiver import WebhookReceiver  # noqa: E402
from wirewatch.ops.lag import Broker  # noqa: E402
from wirewatch.ops.roles import WIREWATCH  # noqa: E402
from wirewatch.settings import Settings, load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ROOT / "examples" / "bbc_topics.toml"
HOPS = ("appear_to_fetched", "fetched_to_kafka", "kafka_to_classified", "classified_to_notified",
        "fetch_to_notify")


def say(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else None


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS in MiB of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        hwm = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if x.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, IndexError):
        return float("nan"), float("nan")
    return cpu, hwm


class Reader:
    """Everything on one Kafka topic so far, read incrementally from the beginning (no group)."""

    def __init__(self, settings: Settings, topic: str, partitions: int) -> None:
        self.c = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                               auto_offset_reset="earliest", group_id=None)
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.c.assign(parts)
        self.c.seek_to_beginning(*parts)
        self.records: list[Any] = []

    def poll(self) -> list[Any]:
        got = [r for recs in self.c.poll(timeout_ms=200, max_records=50000).values() for r in recs]
        self.records += got
        return got

    def close(self) -> None:
        self.c.close()


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run_once(base: dict[str, Any], tmp: Path, receiver: WebhookReceiver, backend: str, n_classify: int,
             args: argparse.Namespace, rate: float, tag: str) -> dict[str, Any]:
    """One configuration on fresh topics and keys; returns its figures."""
    from classify.topics import load_topic_file

    items = load_items(args.articles)
    farm = Farm(items, args.feeds, rate).start()
    topics = load_topic_file(TOPICS)
    run = f"e2e{int(time.time() * 1000) % 10**9}"
    names = {k: f"{run}.{k}" for k in ("articles", "matches", "deliveries")}
    subs = [{"id": f"{run}-{t.id}", "topic_id": t.id, "mode": "instant", "min_score": 0.0,
             "channel": {"type": "webhook", "target": receiver.url}} for t in topics]
    cfg_data = base | {
        "redis": {"key_prefix": f"{run}:"},
        "kafka": {"topics": names, "partitions": args.partitions},
        "ingest": {"feeds": [{"url": farm.url(i), "name": f"Farm {i}", "interval_s": args.poll_s}
                             for i in range(args.feeds)],
                   "min_interval_s": args.poll_s, "default_interval_s": args.poll_s, "max_interval_s": args.poll_s,
                   "jitter": 0.0, "per_host_concurrency": 16, "metrics_port": 0},
        "classify": {"backend": backend, "topics": [t.model_dump(mode="json") for t in topics],
                     "metrics_port": 0, **({"threads": args.classify_threads} if args.classify_threads else {})},
        "alerts": {"subscriptions": subs, "story_similarity": 1.0, "metrics_port": 0},
        "ops": {"metrics_port": 0},
    }
    settings = load_settings(None, **cfg_data)
    bus.ensure_default_topics(settings)
    cfg = tmp / f"{run}.toml"
    cfg.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    logs = tmp / run
    logs.mkdir()
    roles = ["ingest", *[f"classify-{i}" for i in range(n_classify)], "alerts"]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    say(f"[{tag}] {backend} x{n_classify} classify: starting {len(roles)} processes ({len(items)} items, "
        f"{args.feeds} feeds{f', {rate:g}/s' if rate else ', all at once'})")
    restarts: Counter[str] = Counter()

    def start(role: str) -> None:
        out = (logs / f"{role}.log").open("ab")
        procs[role] = subprocess.Popen([*WIREWATCH, "--config", str(cfg), "--log-format", "json", "--log-level",
                                        "info", role.split("-")[0]], stdout=out, stderr=subprocess.STDOUT,
                                       cwd=ROOT, start_new_session=True)

    def revive() -> None:
        # As ``wirewatch run``'s supervisor does: a worker that exits (its liveness check gives up on a group
        # that lost it, say) is started again; the restarts are reported.
        for r, p in list(procs.items()):
            if p.poll() is not None:
                restarts[r] += 1
                tail = (logs / f"{r}.log").read_bytes()[-600:].decode(errors="replace")
                say(f"[{tag}] {r} exited ({p.returncode}); restarting. Its log ends:\n{tail}")
                if restarts[r] > 5:
                    raise SystemExit(f"[{tag}] {r} keeps exiting; logs in {logs}")
                start(r)

    for role in roles:
        start(role)
    arts = Reader(settings, names["articles"], args.partitions)
    matches = Reader(settings, names["matches"], settings.kafka.partitions)
    deliveries = Reader(settings, names["deliveries"], settings.kafka.partitions)
    result: dict[str, Any] = {"backend": backend, "classify_processes": n_classify, "articles": len(items),
                              "rate": rate, "timed_out": False}
    try:
        deadline = time.monotonic() + args.start_timeout
        while not all(assigned(logs / f"{r}.log") for r in roles if r != "ingest"):
            revive()
            if time.monotonic() > deadline:
                raise SystemExit(f"[{tag}] workers not ready (timeout); logs in {logs}")
            time.sleep(0.3)
        cpu0 = {r: proc_usage(p.pid)[0] for r, p in procs.items()}
        release = time.time() + 0.5
        farm.release(release)
        say(f"[{tag}] all workers hold partitions; items released")
        with Broker(settings) as broker:
            classified_at = None
            last_say = 0.0
            deadline = time.monotonic() + args.run_timeout
            while time.monotonic() < deadline:
                revive()
                arts.poll()
                matches.poll()
                deliveries.poll()
                seen = {r.key for r in arts.records}
                lags = [x for x in broker.lags([names["articles"]], groups=[bus.role_group(settings, "classify")])
                        if x.topic == names["articles"]]
                lag = sum(x.lag for x in lags)
                if classified_at is None and len(seen) >= len(items) and lags and lag == 0:
                    classified_at = time.time()
                due = due_pairs(matches.records)
                got = notified(receiver, run)
                if time.monotonic() - last_say > 2:
                    last_say = time.monotonic()
                    say(f"[{tag}] on Kafka {len(seen)}/{len(items)}, classify lag {lag}, "
                        f"notified {len(got)}/{len(due)}")
                folded = suppressed(deliveries.records, arts.records, run)
                if classified_at is not None and set(got) | set(folded) >= due:
                    break
                time.sleep(0.25)
            else:
                result["timed_out"] = True
                say(f"[{tag}] timed out after {args.run_timeout:g} s; logs in {logs}")
                for r in roles:
                    tail = (logs / f"{r}.log").read_bytes()[-1500:].decode(errors="replace")
                    say(f"--- {r} (last lines)\n{tail}")
            done_at = time.time()
            time.sleep(args.settle_s)  # a late repeat would show up now
            arts.poll()
            matches.poll()
            deliveries.poll()
            lags = [x for x in broker.lags([names["articles"]], groups=[bus.role_group(settings, "classify")])
                    if x.topic == names["articles"]]
        wall = time.time() - release
        usage = {}
        for r, p in procs.items():
            cpu, hwm = proc_usage(p.pid)
            usage[r] = {"cpu_s": cpu - cpu0[r], "cpu_share": (cpu - cpu0[r]) / wall, "rss_peak_mib": hwm}
        result["processes"] = usage
        result["restarts"] = dict(restarts)
        result |= account(items, farm, arts.records, matches.records, receiver, run, lags, release,
                          classified_at, done_at, suppressed(deliveries.records, arts.records, run))
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        arts.close()
        matches.close()
        deliveries.close()
        farm.stop()
    return result


def assigned(log: Path) -> bool:
    lines = log.read_bytes().splitlines() if log.exists() else []
    return any(b'"partitions_assigned"' in line and b'"partitions": []' not in line for line in lines)


def due_pairs(match_records: list[Any]) -> set[tuple[str, str]]:
    """(topic id, article url) of every match: with min_score 0, each is due to its topic's subscription."""
    import json

    out = set()
    for r in match_records:
        m = json.loads(r.value)
        out.add((m["topic_id"], m["article"]["url"]))
    return out


def suppressed(delivery_records: list[Any], art_records: list[Any], run: str) -> dict[tuple[str, str], str]:
    """(topic id, article url) -> reason, for this run's deliveries the alerts worker suppressed (a story
    already notified, say): accounted for, not lost."""
    import json

    url_of = {r.key.decode(): json.loads(r.value)["url"] for r in art_records if r.key}
    out = {}
    for r in delivery_records:
        d = json.loads(r.value)
        sub = str(d.get("subscription_id", ""))
        if d.get("status") == "suppressed" and sub.startswith(f"{run}-"):
            for aid in d.get("article_ids", []):
                if aid in url_of:
                    out[(sub[len(run) + 1:], url_of[aid])] = str(d.get("reason", ""))
    return out


def notified(receiver: WebhookReceiver, run: str) -> Counter[tuple[str, str]]:
    """(topic id, article url) -> notifications received for this run (distinct idempotency keys)."""
    got: Counter[tuple[str, str]] = Counter()
    for rec in list(receiver.received):
        sub = str(rec.body.get("subscription_id", ""))
        if sub.startswith(f"{run}-"):
            for it in rec.body.get("items", []):
                got[(sub[len(run) + 1:], it["url"])] += 1
    return got


def account(items: list[Any], farm: Farm, art_recs: list[Any], match_recs: list[Any], receiver: WebhookReceiver,
            run: str, lags: list[Any], release: float, classified_at: float | None, done_at: float,
            folded: dict[tuple[str, str], str]) -> dict[str, Any]:
    import json

    arts: dict[str, dict[str, Any]] = {}
    for r in art_recs:
        a = json.loads(r.value)
        arts.setdefault(a["url"], a | {"_kafka": r.timestamp / 1000})
    classified: dict[str, float] = {}
    for r in match_recs:
        m = json.loads(r.value)
        u = m["article"]["url"]
        classified[u] = min(classified.get(u, float("inf")), ts(m["classified_at"]))
    got = notified(receiver, run)
    first_notice: dict[str, float] = {}
    for rec in receiver.received:
        if str(rec.body.get("subscription_id", "")).startswith(f"{run}-"):
            for it in rec.body.get("items", []):
                first_notice[it["url"]] = min(first_notice.get(it["url"], float("inf")), rec.at)
    n_of = {u: int(u.rsplit("/", 1)[1]) for u in arts}
    hops: dict[str, list[float]] = {h: [] for h in HOPS}
    for u, a in arts.items():
        fetched = ts(a["fetched_at"])
        hops["appear_to_fetched"].append(fetched - farm.appear[n_of[u]])
        hops["fetched_to_kafka"].append(a["_kafka"] - fetched)
        if u in classified:
            hops["kafka_to_classified"].append(classified[u] - a["_kafka"])
            if u in first_notice:
                hops["classified_to_notified"].append(first_notice[u] - classified[u])
        if u in first_notice:
            hops["fetch_to_notify"].append(first_notice[u] - fetched)
    due = due_pairs(match_recs)
    never_on_kafka = len(items) - len(arts)
    uncommitted = sum(x.lag for x in lags) if lags else len(arts)
    missing = len(due - set(got) - set(folded))
    first_fetch = min((ts(a["fetched_at"]) for a in arts.values()), default=release)
    span = (classified_at or done_at) - first_fetch
    return {
        "articles_per_s": len(arts) / max(span, 1e-9) if classified_at else 0.0,
        "notified_articles_per_s": len(arts) / max(done_at - first_fetch, 1e-9),
        "seconds": done_at - release, "on_kafka": len(arts), "matches": len(match_recs), "due": len(due),
        "notifications": sum(got.values()), "duplicates": sum(n - 1 for n in got.values() if n > 1),
        "repeats_same_key": receiver.repeats, "suppressed": len(due & set(folded)),
        "suppressed_reasons": dict(Counter(folded[k] for k in due & set(folded))),
        "lost": never_on_kafka + uncommitted + missing,
        "lost_detail": {"never_on_kafka": never_on_kafka, "not_committed_by_classify": uncommitted,
                        "due_not_notified": missing},
        "hops": {h: {"p50_s": pct(v, 50), "p99_s": pct(v, 99), "n": len(v)} for h, v in hops.items()},
        "p99_fetch_to_notify_s": pct(hops["fetch_to_notify"], 99),
    }


def parse_config(text: str) -> tuple[str, int]:
    backend, _, n = text.partition(":")
    if backend == "auto":
        from classify.embedder import choose_backend

        backend = choose_backend("auto")
    return backend, int(n or 1)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=int, default=600, help="items per configuration")
    ap.add_argument("--feeds", type=int, default=30)
    ap.add_argument("--configs", nargs="+", default=["auto:1", "auto:2", "auto:3", "torch:1"],
                    help="BACKEND:CLASSIFY_PROCESSES, each run on its own topics (auto = the default backend)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the articles topic")
    ap.add_argument("--poll-s", type=float, default=1.0, help="every feed's poll interval")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="items/s of the paced latency run (default: half the first config's rate; 0 = skip)")
    ap.add_argument("--latency-articles", type=int, default=None, help="items of the paced run (default --articles)")
    ap.add_argument("--classify-threads", type=int, default=None, help="classify.threads (default: all cores)")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--run-timeout", type=float, default=300.0, help="longest wait for one configuration")
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables on stderr)")
    args = ap.parse_args()
    machine.report(args.json, lambda: bench(args))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from wirewatch.log import configure

    configure("warning", "console")
    cpu = machine.describe()
    print(machine.line(cpu), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="ww-bench-e2e-"))
    base: dict[str, Any] = {"data_dir": str(tmp), "log": {"level": "info", "format": "json"},
                            "api": {"url_allowlist": ["127.0.0.1"]},
                            "stack": {"kafka_port": stack.free_port(), "controller_port": stack.free_port(),
                                      "redis_port": stack.free_port()}}
    s0 = load_settings(None, **base)
    say(f"starting Kafka and Redis in {tmp} ...")
    stack.up(s0)
    receiver = WebhookReceiver().start()
    results: list[dict[str, Any]] = []
    latency: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        for k, text in enumerate(args.configs):
            backend, n = parse_config(text)
            results.append(run_once(base, tmp, receiver, backend, n, args, 0.0, f"{k + 1}/{len(args.configs)}"))
        rate = args.latency_rate
        if rate is None and results:
            rate = round(max(results[0]["articles_per_s"] / 2, 1.0), 1)
        if rate and args.configs:
            backend, n = parse_config(args.configs[0])
            la = argparse.Namespace(**{**vars(args), "articles": args.latency_articles or args.articles})
            latency = run_once(base, tmp, receiver, backend, n, la, rate, "latency")
    finally:
        receiver.stop()
        stack.down(s0)
        shutil.rmtree(tmp, ignore_errors=True)
    doc = summarize(results, latency, cpu, time.monotonic() - started)
    report(doc)
    return doc


def summarize(results: list[dict[str, Any]], latency: dict[str, Any] | None, cpu: dict[str, Any],
              seconds: float) -> dict[str, Any]:
    first = results[0] if results else {}
    lat = latency or first
    doc: dict[str, Any] = {
        "bench": "e2e", "cpu": cpu, "seconds": round(seconds, 1), "load_avg_after": list(os.getloadavg()),
        "runs": results, "latency_run": latency,
        "articles_per_s": first.get("articles_per_s"),
        "p99_fetch_to_notify_s": lat.get("p99_fetch_to_notify_s"),
        "lost": sum(r["lost"] for r in [*results, *([latency] if latency else [])]),
        "duplicates": sum(r["duplicates"] for r in [*results, *([latency] if latency else [])]),
    }
    torch = next((r for r in results if r["backend"] == "torch" and r["classify_processes"] == 1), None)
    one = next((r for r in results if r["backend"] != "torch" and r["classify_processes"] == 1), None)
    doc["speedup_vs_torch"] = (one["articles_per_s"] / torch["articles_per_s"]
                               if one and torch and torch["articles_per_s"] else None)
    doc["scaling"] = {f"{r['backend']}:{r['classify_processes']}": r["articles_per_s"] / one["articles_per_s"]
                      for r in results if one and one["articles_per_s"] and r["backend"] == one["backend"]}
    return doc


def report(doc: dict[str, Any]) -> None:
    def f(x: float | None, spec: str = ".2f") -> str:
        return "-" if x is None else format(x, spec)

    print("\nratios, same run:")
    if doc["speedup_vs_torch"] is not None:
        print(f"  default backend / torch fp32, 1 classify process: {doc['speedup_vs_torch']:.2f}x articles/s")
    for k, v in doc["scaling"].items():
        print(f"  {k} classify process(es) / 1: {v:.2f}x")
    print(f"  articles lost: {doc['lost']} (must be 0); notified twice: {doc['duplicates']}; due matches "
          f"suppressed by the alerts rules (accounted for): {sum(r['suppressed'] for r in doc['runs'])}")
    print(f"\n{'config':<14}{'art/s':>7}{'→notif/s':>9}{'on Kafka':>9}{'matches':>8}{'notified':>9}{'lost':>5}"
          f"{'dup':>4}  CPU share (cores) / peak RSS MiB per process")
    for r in doc["runs"]:
        procs = "  ".join(f"{k} {v['cpu_share']:.2f}/{v['rss_peak_mib']:.0f}" for k, v in r["processes"].items())
        if r.get("restarts"):
            procs += f"  restarts {r['restarts']}"
        print(f"{r['backend'] + ':' + str(r['classify_processes']):<14}{r['articles_per_s']:>7.1f}"
              f"{r['notified_articles_per_s']:>9.1f}{r['on_kafka']:>9}{r['matches']:>8}{r['notifications']:>9}"
              f"{r['lost']:>5}{r['duplicates']:>4}  {procs}")
    lat = doc["latency_run"] or (doc["runs"][0] if doc["runs"] else None)
    if lat:
        kind = f"paced at {lat['rate']:g} items/s" if lat["rate"] else "backlog run (includes queueing)"
        print(f"\nhop latencies, {lat['backend']} x{lat['classify_processes']}, {kind}; seconds")
        print(f"{'hop':<24}{'p50':>8}{'p99':>8}{'n':>6}")
        for h, v in lat["hops"].items():
            print(f"{h:<24}{f(v['p50_s'], '.3f'):>8}{f(v['p99_s'], '.3f'):>8}{v['n']:>6}")
        print(f"lost in this run: {lat['lost']} ({lat['lost_detail']})")
    print(f"\n{doc['seconds']:.0f} s in all; load average after {', '.join(f'{x:.2f}' for x in doc['load_avg_after'])}")


if __name__ == "__main__":
    main()
