"""End-to-end benchmark: a feed farm -> ingest -> Kafka -> classify -> Kafka -> alerts -> a webhook, all real.

    .venv/bin/python -m bench.e2e [--articles 600] [--feeds 30] [--configs onnx-int8:1 onnx-int8:2 ...] [--json]
    .venv/bin/python -m bench.e2e --articles 60 --configs auto:1 --latency-rate 0     # a quick run

Starts a private Kafka (KRaft) + redis-server once (free ports, temp dir), a feed farm and a webhook receiver
in this process, and for each configuration ``BACKEND:N`` the real ``wirewatch ingest``, N ``wirewatch
classify`` and one ``wirewatch alerts`` as processes, on their own Kafka topics and Redis prefix. When every
worker holds its partitions, the farm releases ``--articles`` items (BBC titles and first sentences from
../shared/eval/dev when present) over ``--feeds`` feeds (default 30, more where a backlog would not fit in
their 50-item windows) all at once, a backlog: articles/s is the sustained rate from the first fetch until the
classify group has committed everything (and until the last notification).

Classify only, same run: once a configuration's processes are stopped, the articles it put on Kafka (the same
records) go onto a fresh articles topic and that configuration's N ``wirewatch classify`` processes, started
afresh with nothing else running, consume them (:mod:`bench.e2e.classify_only`): Kafka consume and produce
included, fetch, parse and alerts not. End-to-end articles/s / classify-only articles/s (goal >= 0.8) says
whether a stage other than classify bounds the pipeline. ``--no-classify-only`` skips it.
Before the first configuration, a warm-up of ``--warmup`` items (default 500; 0 = none) goes through that
configuration and is not counted: the broker and redis-server live for the whole run, and without it the first
configuration alone would pay the broker's start (its JIT compiler takes most of its CPU in the first minute)
while the classify-only runs after it find the broker warm.
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
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tomli_w  # noqa: E402

from bench import machine  # noqa: E402
from bench.e2e import classify_only  # noqa: E402
from bench.e2e.account import Tally, account, suppressed  # noqa: E402
from bench.e2e.farm import Farm, feeds_for, load_items  # noqa: E402
from bench.e2e.procs import Meter, Reader, Roles, say, stack_pids  # noqa: E402
from wirewatch import bus, stack  # noqa: E402
from wirewatch.demo.receiver import WebhookReceiver  # noqa: E402
from wirewatch.ops.lag import Broker  # noqa: E402
from wirewatch.settings import load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOPICS = ROOT / "examples" / "bbc_topics.toml"


def run_once(base: dict[str, Any], tmp: Path, receiver: WebhookReceiver, backend: str, n_classify: int,
             args: argparse.Namespace, rate: float, tag: str, with_classify_only: bool = False) -> dict[str, Any]:
    """One configuration on fresh topics and keys; returns its figures. ``with_classify_only``: then measure
    classify alone on the same articles (:mod:`bench.e2e.classify_only`) and add its rate and the ratio."""
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
    workers = ["ingest", *[f"classify-{i}" for i in range(n_classify)], "alerts"]
    roles = Roles(cfg, logs, tag)
    say(f"[{tag}] {backend} x{n_classify} classify: starting {len(workers)} processes ({len(items)} items, "
        f"{args.feeds} feeds{f', {rate:g}/s' if rate else ', all at once'})")
    for name in workers:
        roles.start(name)
    arts = Reader(settings, names["articles"], args.partitions)
    matches = Reader(settings, names["matches"], settings.kafka.partitions)
    deliveries = Reader(settings, names["deliveries"], settings.kafka.partitions)
    result: dict[str, Any] = {"backend": backend, "classify_processes": n_classify, "articles": len(items),
                              "feeds": args.feeds, "rate": rate, "timed_out": False}
    try:
        roles.wait_assigned([n for n in workers if n != "ingest"], args.start_timeout)
        cpu0 = roles.cpu()
        meter = Meter(stack_pids(settings))
        release = time.time() + 0.5
        farm.release(release)
        say(f"[{tag}] all workers hold partitions; items released")
        with Broker(settings) as broker:
            classified_at = None
            last_say = 0.0
            tally = Tally(receiver, run)
            deadline = time.monotonic() + args.run_timeout
            while time.monotonic() < deadline:
                roles.revive()
                tally.add(arts.poll(), matches.poll(), deliveries.poll())
                lags = [x for x in broker.lags([names["articles"]], groups=[bus.role_group(settings, "classify")])
                        if x.topic == names["articles"]]
                lag = sum(x.lag for x in lags)
                if classified_at is None and len(tally.keys) >= len(items) and lags and lag == 0:
                    classified_at = time.time()
                    # What every process had of the machine while classify was the stage being waited for.
                    span_s = max(classified_at - release, 1e-9)
                    result["span"] = {"seconds": span_s, "processes": roles.usage(cpu0, span_s),
                                      "shared": meter.read()}
                if time.monotonic() - last_say > 2:
                    last_say = time.monotonic()
                    say(f"[{tag}] on Kafka {len(tally.keys)}/{len(items)}, classify lag {lag}, "
                        f"notified {len(tally.got)}/{len(tally.due)}")
                if classified_at is not None and tally.complete():
                    break
                time.sleep(0.25)
            else:
                result["timed_out"] = True
                say(f"[{tag}] timed out after {args.run_timeout:g} s; logs in {logs}")
                for name in workers:
                    say(f"--- {name} (last lines)\n{roles.tail(name, 1500)}")
            done_at = time.time()
            time.sleep(args.settle_s)  # a late repeat would show up now
            arts.poll()
            matches.poll()
            deliveries.poll()
            lags = [x for x in broker.lags([names["articles"]], groups=[bus.role_group(settings, "classify")])
                    if x.topic == names["articles"]]
        result["processes"] = roles.usage(cpu0, time.time() - release)
        result["shared"] = meter.read()
        result["restarts"] = dict(roles.restarts)
        result |= account(items, farm, arts.records, matches.records, receiver, run, lags, release,
                          classified_at, done_at, suppressed(deliveries.records, arts.records, run))
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        roles.stop()
        arts.close()
        matches.close()
        deliveries.close()
        farm.stop()
    if with_classify_only:
        # Only now, with ingest, the first classify processes and alerts gone: classify has the machine.
        co = classify_only.measure(cfg_data, tmp, classify_only.distinct_records(arts.records), n_classify, args,
                                   tag)
        co["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        result["classify_only"] = co
        result["classify_only_articles_per_s"] = co["articles_per_s"] or None
        result["e2e_over_classify_only"] = classify_only.over(result["articles_per_s"],
                                                              result["classify_only_articles_per_s"])
    return result


def parse_config(text: str) -> tuple[str, int]:
    backend, _, n = text.partition(":")
    if backend == "auto":
        from classify.embedder import choose_backend

        backend = choose_backend("auto")
    return backend, int(n or 1)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=int, default=600, help="items per configuration")
    ap.add_argument("--feeds", type=int, default=None,
                    help=f"feeds of the farm (default: 30, or more where the backlog exceeds {Farm.WINDOW} a feed)")
    ap.add_argument("--configs", nargs="+", default=["auto:1", "auto:2", "auto:3", "torch:1"],
                    help="BACKEND:CLASSIFY_PROCESSES, each run on its own topics (auto = the default backend)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the articles topic")
    ap.add_argument("--poll-s", type=float, default=1.0, help="every feed's poll interval")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="items/s of the paced latency run (default: half the first config's rate; 0 = skip)")
    ap.add_argument("--latency-articles", type=int, default=None, help="items of the paced run (default --articles)")
    ap.add_argument("--warmup", type=int, default=500,
                    help="items through the first configuration before anything is measured (0 = none)")
    ap.add_argument("--classify-threads", type=int, default=None, help="classify.threads (default: all cores)")
    ap.add_argument("--no-classify-only", action="store_true",
                    help="skip measuring classify alone on each configuration's articles")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--run-timeout", type=float, default=300.0, help="longest wait for one configuration")
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables on stderr)")
    args = ap.parse_args()
    try:
        args.feeds = feeds_for(args.articles, args.feeds)
    except ValueError as exc:
        ap.error(str(exc))
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
    warmup: dict[str, Any] | None = None
    try:
        if args.warmup and args.configs:
            backend, n = parse_config(args.configs[0])
            wa = argparse.Namespace(**{**vars(args), "articles": args.warmup,
                                       "feeds": feeds_for(args.warmup, None)})
            say(f"warm-up: {args.warmup} items through {backend} x{n}, not counted")
            w = run_once(base, tmp, receiver, backend, n, wa, 0.0, "warm-up")
            warmup = {"articles": w["articles"], "articles_per_s": w["articles_per_s"], "lost": w["lost"]}
        for k, text in enumerate(args.configs):
            backend, n = parse_config(text)
            results.append(run_once(base, tmp, receiver, backend, n, args, 0.0, f"{k + 1}/{len(args.configs)}",
                                    with_classify_only=not args.no_classify_only))
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
    doc["warmup"] = warmup
    if warmup:
        doc["lost"] += warmup["lost"]
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
    doc["classify_only_articles_per_s"] = first.get("classify_only_articles_per_s")
    doc["e2e_over_classify_only"] = first.get("e2e_over_classify_only")
    base = one.get("classify_only_articles_per_s") if one else None
    doc["classify_only_scaling"] = {f"{r['backend']}:{r['classify_processes']}":
                                    classify_only.over(r.get("classify_only_articles_per_s"), base)
                                    for r in results if one and base and r["backend"] == one["backend"]}
    return doc


def report(doc: dict[str, Any]) -> None:
    def f(x: float | None, spec: str = ".2f") -> str:
        return "-" if x is None else format(x, spec)

    def usage(name: str, v: dict[str, Any]) -> str:
        return f"{name} {v['cpu_share']:.2f}/{v['rss_peak_mib']:.0f}/{v.get('runqueue_wait_s', float('nan')):.0f}"

    def shared(r: dict[str, Any]) -> str:
        sh = r.get("shared", {})
        them = " ".join(f"{k} {v['cpu_share']:.2f}" for k, v in sh.items() if isinstance(v, dict))
        return f"  | {them}; machine busy {f(sh.get('machine_busy_cores'))} of {doc['cpu']['cpus']} cores" if sh else ""

    print("\nratios, same run:")
    if doc["speedup_vs_torch"] is not None:
        print(f"  default backend / torch fp32, 1 classify process: {doc['speedup_vs_torch']:.2f}x articles/s")
    for k, v in doc["scaling"].items():
        alone = doc["classify_only_scaling"].get(k)
        print(f"  {k} classify process(es) / 1: {v:.2f}x end to end"
              + (f", {alone:.2f}x classify only" if alone else ""))
    for r in doc["runs"]:
        if "classify_only" in r:
            print(f"  {r['backend']}:{r['classify_processes']} end-to-end / classify-only articles/s: "
                  f"{f(r['e2e_over_classify_only'])} (goal >= 0.8; {r['articles_per_s']:.1f} / "
                  f"{f(r['classify_only_articles_per_s'], '.1f')})")
    if doc.get("warmup"):
        w = doc["warmup"]
        print(f"  (after a warm-up of {w['articles']} items, not counted: {w['articles_per_s']:.1f} articles/s, "
              f"{w['lost']} lost)")
    print(f"  articles lost: {doc['lost']} (must be 0); notified twice: {doc['duplicates']}; due matches "
          f"suppressed by the alerts rules (accounted for): {sum(r['suppressed'] for r in doc['runs'])}")
    print(f"\n{'config':<14}{'art/s':>7}{'→notif/s':>9}{'on Kafka':>9}{'matches':>8}{'notified':>9}{'lost':>5}"
          f"{'dup':>4}  CPU share (cores) / peak RSS MiB / s waiting for a core, per process")
    for r in doc["runs"]:
        procs = "  ".join(usage(k, v) for k, v in r["processes"].items())
        if r.get("restarts"):
            procs += f"  restarts {r['restarts']}"
        procs += shared(r)
        print(f"{r['backend'] + ':' + str(r['classify_processes']):<14}{r['articles_per_s']:>7.1f}"
              f"{r['notified_articles_per_s']:>9.1f}{r['on_kafka']:>9}{r['matches']:>8}{r['notifications']:>9}"
              f"{r['lost']:>5}{r['duplicates']:>4}  {procs}")
    spans = [r for r in doc["runs"] if r.get("span")]
    if spans:
        print("\nwhile classify was working through the backlog (release -> every article committed by classify): "
              "CPU share (cores) / s waiting for a core")
        for r in spans:
            sp = r["span"]
            procs = "  ".join(f"{k} {v['cpu_share']:.2f}/{v['runqueue_wait_s']:.0f}"
                              for k, v in sp["processes"].items())
            print(f"{r['backend'] + ':' + str(r['classify_processes']):<14}{sp['seconds']:>6.1f} s  {procs}"
                  f"{shared(sp)}")
    alone = [r for r in doc["runs"] if "classify_only" in r]
    if alone:
        print(f"\nclassify only, same articles already on Kafka, nothing else running\n{'config':<14}{'art/s':>7}"
              f"{'s':>7}{'uncommitted':>12}{'matches':>8}{'(e2e)':>7}  CPU share (cores) / peak RSS MiB / s waiting "
              "for a core, per process")
        for r in alone:
            co = r["classify_only"]
            procs = "  ".join(usage(k, v) for k, v in co["processes"].items())
            if co.get("restarts"):
                procs += f"  restarts {co['restarts']}"
            procs += shared(co)
            print(f"{r['backend'] + ':' + str(r['classify_processes']):<14}{co['articles_per_s']:>7.1f}"
                  f"{co['seconds']:>7.1f}{co['not_committed']:>12}{co['match_pairs']:>8}{r['due']:>7}  {procs}")
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
