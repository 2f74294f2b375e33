"""The guarantees of DESIGN.md, end to end through the real worker processes, a real broker and Redis.

1. A broker restart (kill -9 of the Kafka JVM, then start it again) while feeds are serving new entries:
   every entry a feed served is on ``articles``, every on-topic article reached a Match, every story was
   notified once per subscription (a repeat only with the same idempotency key), and no worker crashed (one
   stuck in its group join across the restart may be ended by a stall check and started again, once).
   This test runs on a stack of its own, so that the session broker other tests use stays up.
2. kill -9 of the classify worker while articles stream in: after a restart, every article on ``articles``
   has its Match (the topic matches every article, so "classified" is observable as "matched").
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.integration import ops_support as sup
from tests.integration.alerts_support import Receiver
from tests.integration.guarantee_support import (
    GrowingFeed,
    kill_kafka,
    matched_ids,
    private_stack,
    private_stack_settings,
    problems,
    read_all,
    settled,
)
from tests.integration.ingest_server import FeedServer
from wirewatch import bus, stack
from wirewatch.identity import article_id
from wirewatch.liveness import EXIT_STALLED
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC_ID = "aleppo-ceasefire"
TOPIC: dict[str, object] = {"id": TOPIC_ID, "name": "Aleppo ceasefire and evacuation",
         "description": "The ceasefire and evacuation deal for eastern Aleppo.",
         "examples": ["Deal reached for rebels to leave besieged east Aleppo"],
         # Deterministic on purpose: every article passes the threshold unless it names football. What the
         # model thinks of a headline is the classifier's own tests' business, not this one's.
         "threshold": 0.0, "exclude": ["football"]}
FEEDS, PER_FEED, EVERY_S = 3, 16, 1.5
SUBS = ("desk", "wire")
ROLES = ("ingest", "classify", "alerts")


def _entries(feed: int) -> list[dict[str, str]]:
    """Entries of one feed: even ones on the topic (each its own story), odd ones about football."""
    out = []
    for j, (title, summary) in enumerate(sup.texts(PER_FEED, seed=100 + feed)):
        head = f"Aleppo ceasefire {feed}-{j}: {title}" if j % 2 == 0 else f"Football {feed}-{j}: {title}"
        link = f"https://feeds.example/{feed}/{j}"
        out.append({"title": head, "link": link, "guid": link, "description": summary})
    return out


def _config(s: Settings, path: Path) -> Path:
    path.write_text(tomli_w.dumps(s.model_dump(mode="json", exclude_none=True)))
    return path


@pytest.mark.timeout(240)  # a backstop only: the waits inside end the test within about 170 s
def test_broker_restart_mid_stream_loses_nothing_and_notifies_each_story_once(tmp_path: Path) -> None:
    t_start = time.monotonic()
    server = FeedServer().start()
    feeds = [GrowingFeed(_entries(i), EVERY_S) for i in range(FEEDS)]
    for i, f in enumerate(feeds):
        server.routes[f"/feed{i}"] = f
    urls = [server.url(f"/feed{i}") for i in range(FEEDS)]
    rx = Receiver().__enter__()
    s = private_stack_settings(
        tmp_path / "data",
        api={"url_allowlist": ["127.0.0.1"]},
        # A worker whose poll hangs in kafka-python's group join exits after 20 s and is restarted.
        kafka={"poll_stall_s": 20.0},
        ingest={"feeds": [{"url": u, "interval_s": 1.0} for u in urls], "min_interval_s": 1, "max_interval_s": 2,
                "default_interval_s": 1, "jitter": 0, "max_backoff_s": 2, "fetch_timeout_s": 5,
                "claim_lease_s": 5, "metrics_port": 0},
        classify={"metrics_port": 0, "batch_size": 16, "max_wait_ms": 100, "topics": [TOPIC]},
        alerts={"metrics_port": 0, "story_similarity": 1.0, "claim_lease_s": 5.0, "session_timeout_ms": 6000,
                "backoff_initial_s": 0.2, "batch_size": 20,
                "subscriptions": [{"id": sid, "topic_id": TOPIC_ID, "mode": "instant",
                                   "channel": {"type": "webhook", "target": f"{rx.url}?sub={sid}"}}
                                  for sid in SUBS]},
        ops={"metrics_port": 0, "lag_interval_s": 2, "stall_after_s": 20, "restart_initial_s": 1,
             "drain_timeout_s": 20},
    )
    expected_ids = {article_id(url=e["link"], feed_url=u) for f, u in zip(feeds, urls, strict=True)
                    for e in f.entries}
    on_topic = {article_id(url=e["link"], feed_url=u) for f, u in zip(feeds, urls, strict=True)
                for e in f.entries if e["title"].startswith("Aleppo")}
    expected_pairs = {(sid, e["title"]) for f in feeds for e in f.entries
                      if e["title"].startswith("Aleppo") for sid in SUBS}
    logs = tmp_path / "logs"
    procs: dict[str, Any] = {}
    restarts = 0
    try:
        with private_stack(s):
            up_s = time.monotonic() - t_start
            bus.ensure_default_topics(s)
            cfg = _config(s, tmp_path / "guarantees.toml")
            try:
                logs.mkdir()
                procs = {"run": subprocess.Popen(
                    [sup.WIREWATCH, "--config", str(cfg), "--log-format", "json", "run", "--no-stack",
                     *[a for r in ROLES for a in ("--only", r)], "--log-dir", str(logs)],
                    stdout=(logs / "supervisor.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)}
                assert sup.wait_until(lambda: all(settled(logs / f"{r}.log") for r in ("classify", "alerts")),
                                      90), f"workers not ready; logs in {logs}"
                for f in feeds:
                    f.begin()
                stream_start = time.monotonic()
                # Mid-stream: about a third of the entries are out when the broker dies.
                time.sleep(PER_FEED * EVERY_S / 3)
                served_before = sum(len(f.served) for f in feeds)
                kill_kafka(s)
                killed_at = time.monotonic()
                time.sleep(4)  # the feeds go on serving into the outage
                stack.up(s)
                down_s = time.monotonic() - killed_at
                restarts = 1

                def arrived() -> set[tuple[str, str]]:
                    with rx.lock:
                        return {_pair(r) for r in rx.accepted}

                deadline = t_start + 150  # the whole test stays under 3 minutes
                while time.monotonic() < deadline and not (all(f.done() for f in feeds)
                                                           and expected_pairs <= arrived()):
                    time.sleep(0.5)
                time.sleep(3)  # a late repeat would show up now
                alive = procs["run"].poll() is None
                on_kafka = [k for k, _ in read_all(s, s.kafka.topics.articles)]
                matched = matched_ids(s).get(TOPIC_ID, set())
                elapsed = time.monotonic() - stream_start
            finally:
                sup.stop(procs.values())  # before the stack goes down
                events = _events(logs / "supervisor.log")
    finally:
        rx.__exit__()
        server.stop()
    served = {article_id(url=link, feed_url=u) for f, u in zip(feeds, urls, strict=True) for link in f.served}
    counts = Counter(_pair(r) for r in rx.accepted)
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for req in rx.accepted:
        keys[_pair(req)].add(req["headers"].get("Idempotency-Key", ""))
    repeats = {k: n for k, n in counts.items() if n > 1}
    got = set(counts)
    warned = {r: problems(logs / f"{r}.log") for r in ROLES}
    # A worker stuck in its group join across the restart is ended by a stall check (its own: exit 75, or the
    # supervisor's, which asks the broker) and started again: a recovery, reported here and bounded to one per
    # role. Anything else that ends a worker is a crash.
    stalled_pids = {e.get("pid") for e in events
                    if e.get("event") == "worker_restarting" and e.get("reason") == "stalled"}
    exits = [e for e in events if e.get("event") == "worker_exited"]
    recovered = [e for e in exits if e.get("exit_code") == EXIT_STALLED or e.get("pid") in stalled_pids]
    crashed = [e for e in exits if e not in recovered]
    restarted = [f"{e['role']} ({e.get('reason', e.get('event'))})" for e in events
                 if e.get("event") in ("worker_restarting", "worker_stalled")]
    print(f"\nbroker restart: stack up in {up_s:.0f}s; {served_before} entries served before the kill, broker back "
          f"after {down_s:.0f}s; {len(served)}/{len(expected_ids)} entries served, {len(set(on_kafka))} distinct "
          f"on articles ({len(on_kafka) - len(set(on_kafka))} repeats), {len(matched & on_topic)}/{len(on_topic)} "
          f"on-topic matched, {len(matched - on_topic)} off-topic matched; notifications "
          f"{len(rx.accepted)} received, {len(got & expected_pairs)}/{len(expected_pairs)} expected arrived, "
          f"{len(repeats)} repeated; broker restarts {restarts}; supervisor alive {alive}, workers crashed "
          f"{len(crashed)}, recovered by a stall check {[e['role'] for e in recovered]}, restarted by the "
          f"supervisor: {restarted or 'none'}; stream took {elapsed:.0f}s; "
          f"warnings logged {warned}")
    assert served == expected_ids, "the feeds did not serve every entry in time"
    assert served <= set(on_kafka), f"lost between feed and articles: {len(served - set(on_kafka))}"
    assert on_topic <= matched, f"on-topic articles without a Match: {len(on_topic - matched)}"
    assert not matched - on_topic, "an excluded (football) article matched"
    assert expected_pairs <= got, f"missing notifications: {sorted(expected_pairs - got)[:5]}"
    assert not got - expected_pairs, f"unexpected notifications: {sorted(got - expected_pairs)[:5]}"
    assert all(len(v) == 1 for v in keys.values()), "a (subscription, story) was notified under two keys"
    stalls = [line for r in ROLES for line in (logs / f"{r}.log").read_text(errors="replace").splitlines()
              if '"consumer_stalled"' in line] if logs.exists() else []
    assert alive and not crashed, f"a worker died: {crashed}; its watchdog said {stalls}; logs in {logs}"
    assert max(Counter(e["role"] for e in recovered).values(), default=0) <= 1, f"restarted repeatedly: {recovered}"


def _events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _pair(req: dict[str, Any]) -> tuple[str, str]:
    return req["json"]["subscription_id"], req["json"]["items"][0]["title"]


@pytest.mark.timeout(180)
def test_kill_9_of_classify_mid_stream_leaves_no_article_unclassified(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    n, chunk = 400, 20
    settings, cfg = sup.pipeline_settings(make_settings, tmp_path, "http://127.0.0.1:9/unused")
    logs = tmp_path / "logs"
    proc = sup.start("classify", cfg, logs)
    producer = bus.Producer(settings, client_id="test")
    items = sup.articles(n, "k", seed=11)
    produced = threading.Event()

    def stream() -> None:
        for i in range(0, n, chunk):
            sup.produce(settings, producer, items[i:i + chunk])
            time.sleep(0.2)
        produced.set()

    feeder = threading.Thread(target=stream, daemon=True)
    started = time.monotonic()
    try:
        assert sup.wait_until(lambda: sup.assigned(logs / "classify-0.log"), 50), f"log in {logs}"
        feeder.start()
        # kill -9 once part of the stream has been classified, while the rest is still arriving
        assert sup.wait_until(lambda: len(read_all(settings, settings.kafka.topics.matches)) >= 40, 30)
        proc.kill()
        proc.wait(10)
        before = len({k for k, _ in read_all(settings, settings.kafka.topics.matches)})
        proc = sup.start("classify", cfg, logs, 1)
        assert produced.wait(30), "producing the stream took too long"
        ids = {a.id for a in items}

        def all_matched() -> bool:
            return ids <= matched_ids(settings).get("everything", set())

        assert sup.wait_until(all_matched, 50, every_s=1.0), f"log in {logs}"
        alive = proc.poll() is None
    finally:
        sup.stop([proc])
        producer.close()
        feeder.join(30)
    on_articles = {k for k, _ in read_all(settings, settings.kafka.topics.articles)}
    matches = read_all(settings, settings.kafka.topics.matches)
    matched = matched_ids(settings).get("everything", set())
    print(f"\nclassify kill -9: {len(on_articles)} articles, {before} matched before the kill, "
          f"{len(matched)} matched in the end, {len(matches) - len(matched)} matches repeated (classified again after "
          f"the kill: the batch in flight, at-least-once), {time.monotonic() - started:.0f}s")
    assert on_articles == {a.id for a in items}
    assert on_articles <= matched, f"articles never classified: {len(on_articles - matched)}"
    assert before < n, "the kill landed after everything was classified"
    assert alive
