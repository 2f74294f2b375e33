"""Scale-out on the real broker: three classify and two alerts processes in their consumer groups over six
partitions, under ``wirewatch run``; one of each is killed with SIGKILL mid-stream. The groups rebalance,
the supervisor restarts the killed ones, every article still ends in exactly one notification, and no
story is notified twice.

Every article is its own story here (folding is set to need identical vectors) and the topic passes every
article (threshold 0), so the expected notifications are exactly the articles produced. A repeat with the
same idempotency key (the documented window between a channel's acknowledgement and the ledger write) is
counted and reported, and dropped as a receiver would; two different keys for one story would fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import ops_support as sup
from wirewatch import bus
from wirewatch.demo.receiver import WebhookReceiver
from wirewatch.ops.lag import Broker
from wirewatch.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_ARTICLES = 150
PARTITIONS = 6


def test_three_classify_two_alerts_survive_a_kill_each_with_nothing_lost_and_no_duplicate(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    receiver = WebhookReceiver().start()
    settings, cfg = sup.pipeline_settings(make_settings, tmp_path, receiver.url, kafka={"partitions": PARTITIONS})
    logs = tmp_path / "logs"
    pipeline = sup.Pipeline(cfg, logs, {"classify": 3, "alerts": 2})
    items = sup.articles(N_ARTICLES, "sc")
    urls = [a.url for a in items]
    producer = bus.Producer(settings, client_id="test")

    def produce() -> None:
        for i in range(0, N_ARTICLES, 5):
            sup.produce(settings, producer, items[i:i + 5])
            time.sleep(0.1)

    try:
        assert sup.wait_until(lambda: len(list(logs.glob("*.log"))) == 5 and pipeline.ready(), 120), logs
        feeder = threading.Thread(target=produce)
        feeder.start()
        # Kill one of each once the pipeline is visibly mid-stream.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(receiver.received) < N_ARTICLES // 5:
            time.sleep(0.2)
        assert len(receiver.received) >= N_ARTICLES // 5, "pipeline did not start delivering"
        killed_at = len(receiver.received)
        kill_time = time.monotonic()
        killed = {role: pipeline.pid(role) for role in ("classify", "alerts")}
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)
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
        exit_code = pipeline.stop()
        producer.close()
        receiver.stop()

    got = [r.body for r in receiver.received]
    notified_urls = Counter(item["url"] for body in got for item in body.get("items", []))
    per_story = Counter((body["subscription_id"], body["story_id"]) for body in got)
    missing = sorted(set(urls) - set(notified_urls))
    diag = (f"received {len(got)} (killed at {killed_at}), repeats {receiver.repeats}, missing {missing[:5]}, "
            f"logs in {logs}")
    stalls = [e["role"] for e in pipeline.events("worker_stalled")]
    print(f"\nscale-out: {N_ARTICLES} articles, 3 classify + 2 alerts over {PARTITIONS} partitions; killed one of "
          f"each after {killed_at} notifications; all {len(got)} delivered {recovered_s:.1f}s after the kill; "
          f"{receiver.repeats} same-key repeat(s); watchdog restarts of stalled workers: {stalls or 'none'}")
    assert killed_at < N_ARTICLES, "the kill was not mid-stream"
    assert missing == [], diag
    assert [k for k, n in per_story.items() if n > 1] == [], diag
    assert max(notified_urls.values()) == 1, diag
    assert len(got) == N_ARTICLES, diag
    assert receiver.invalid == 0
    # The survivors took over every partition and committed everything.
    assert all(r.lag == 0 for r in lags.values()), lags
    assert {g for g, _ in lags} >= set(bus.role_groups(settings).values())
    taken_over = [p for p in logs.glob("classify-*.log")]
    assert any(b.count(b'"partitions_assigned"') >= 2 for b in (p.read_bytes() for p in taken_over))
    exits = {(e["role"], e["pid"]): e for e in pipeline.events("worker_exited")}
    for role, pid in killed.items():
        assert exits[(role, pid)]["exit"] == "signal SIGKILL"  # the supervisor saw the kill and restarted it
    assert exit_code == 0
