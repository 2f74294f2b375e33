"""Scale-out on the real broker: three classify and two alerts processes in their consumer groups over six
partitions; one of each is killed with SIGKILL mid-stream. The groups rebalance, every article still ends
in exactly one notification, and no story is notified twice.

Every article is its own story here (folding is set to need identical vectors) and the topic passes every
article (threshold 0), so the expected notifications are exactly the articles produced. A repeat with the
same idempotency key (the documented window between a channel's acknowledgement and the ledger write) is
counted and reported, and dropped as a receiver would; two different keys for one story would fail.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from wirewatch import bus
from wirewatch.demo.feeds import data_text
from wirewatch.demo.receiver import WebhookReceiver
from wirewatch.ops.lag import Broker
from wirewatch.records import Article, encode, utcnow
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WIREWATCH = str(Path(sys.executable).with_name("wirewatch"))
N_ARTICLES = 150
PARTITIONS = 6


def _texts(n: int) -> list[tuple[str, str]]:
    """``n`` (title, summary) pairs of real words in random order: unrelated to each other."""
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{4,}", data_text("articles.toml"))})
    rng = random.Random(7)
    return [(" ".join(rng.sample(words, 8)).capitalize(), " ".join(rng.sample(words, 25)) + ".") for _ in range(n)]


def _start(role: str, cfg: Path, log_dir: Path, i: int) -> subprocess.Popen[bytes]:
    out = (log_dir / f"{role}-{i}.log").open("wb")
    return subprocess.Popen([WIREWATCH, "--config", str(cfg), "--log-format", "json", role], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _assigned(log: Path) -> bool:
    """True once the process logged a non-empty partition assignment."""
    lines = log.read_bytes().splitlines() if log.exists() else []
    return any(b'"partitions_assigned"' in line and b'"partitions": []' not in line for line in lines)


def test_three_classify_two_alerts_survive_a_kill_each_with_nothing_lost_and_no_duplicate(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    settings = make_settings(
        data_dir=str(tmp_path),
        kafka={"partitions": PARTITIONS},
        classify={"metrics_port": 0, "batch_size": 16, "max_wait_ms": 100,
                  "topics": [{"id": "everything", "name": "Everything", "description": "any news at all",
                              "examples": ["news"], "threshold": 0.0}]},
        alerts={"metrics_port": 0, "story_similarity": 1.0, "claim_lease_s": 5.0, "session_timeout_ms": 6000,
                "backoff_initial_s": 0.2, "batch_size": 20,
                "subscriptions": [{"id": "desk", "topic_id": "everything", "mode": "instant",
                                   "channel": {"type": "webhook", "target": receiver.url}}]},
        api={"url_allowlist": ["127.0.0.1"]},
    )
    bus.ensure_default_topics(settings)
    cfg = tmp_path / "scale.toml"
    cfg.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: dict[str, list[subprocess.Popen[bytes]]] = {
        "classify": [_start("classify", cfg, logs, i) for i in range(3)],
        "alerts": [_start("alerts", cfg, logs, i) for i in range(2)],
    }
    texts = _texts(N_ARTICLES)
    urls = [f"https://scale.example/a/{i}" for i in range(N_ARTICLES)]
    producer = bus.Producer(settings, client_id="test")

    def produce() -> None:
        for i in range(0, N_ARTICLES, 5):
            now = utcnow()
            batch = [Article(id=f"sc{j:05d}", url=urls[j], title=texts[j][0], summary=texts[j][1],
                             published_at=now, fetched_at=now, feed_url="https://scale.example/rss",
                             source="Scale Test") for j in range(i, min(i + 5, N_ARTICLES))]
            producer.send_many([bus.Outgoing(settings.kafka.topics.articles, a.id, encode(a)) for a in batch])
            time.sleep(0.1)

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(_assigned(p) for p in logs.glob("*.log")):
            time.sleep(0.5)
        feeder = threading.Thread(target=produce)
        feeder.start()
        # Kill one of each once the pipeline is visibly mid-stream.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(receiver.received) < N_ARTICLES // 5:
            time.sleep(0.2)
        assert len(receiver.received) >= N_ARTICLES // 5, "pipeline did not start delivering"
        killed_at = len(receiver.received)
        kill_time = time.monotonic()
        for role in ("classify", "alerts"):
            os.killpg(procs[role][0].pid, signal.SIGKILL)
            procs[role][0].wait(10)
        feeder.join(60)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and len(receiver.received) < N_ARTICLES:
            time.sleep(0.5)
        recovered_s = time.monotonic() - kill_time
        time.sleep(3)  # a late duplicate would show up now
        with Broker(settings) as broker:
            lags = {(r.group, r.topic): r for r in broker.lags([settings.kafka.topics.articles,
                                                               settings.kafka.topics.matches])}
    finally:
        for group in procs.values():
            for p in group:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
        for group in procs.values():
            for p in group:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        producer.close()
        receiver.stop()

    got = [r.body for r in receiver.received]
    notified_urls = Counter(item["url"] for body in got for item in body.get("items", []))
    per_story = Counter((body["subscription_id"], body["story_id"]) for body in got)
    missing = sorted(set(urls) - set(notified_urls))
    diag = (f"received {len(got)} (killed at {killed_at}), repeats {receiver.repeats}, missing {missing[:5]}, "
            f"logs in {logs}")
    print(f"\nscale-out: {N_ARTICLES} articles, 3 classify + 2 alerts over {PARTITIONS} partitions; killed one of "
          f"each after {killed_at} notifications; all {len(got)} delivered {recovered_s:.1f}s after the kill; "
          f"{receiver.repeats} same-key repeat(s)")
    assert killed_at < N_ARTICLES, "the kill was not mid-stream"
    assert missing == [], diag
    assert [k for k, n in per_story.items() if n > 1] == [], diag
    assert max(notified_urls.values()) == 1, diag
    assert len(got) == N_ARTICLES, diag
    assert receiver.invalid == 0
    # The survivors took over every partition and committed everything.
    assert all(r.lag == 0 for r in lags.values()), lags
    assert {g for g, _ in lags} >= {"wirewatch-classify", "wirewatch-alerts"}
    taken_over = [p for p in logs.glob("classify-*.log") if p.name != "classify-0.log"]
    assert any(b.count(b'"partitions_assigned"') >= 2 for b in (p.read_bytes() for p in taken_over))
