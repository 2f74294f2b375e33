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
import signal
import subprocess
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
    procs: dict[str, list[subprocess.Popen[bytes]]] = {
        "classify": [sup.start("classify", cfg, logs, i) for i in range(3)],
        "alerts": [sup.start("alerts", cfg, logs, i) for i in range(2)],
    }
    items = sup.articles(N_ARTICLES, "sc")
    urls = [a.url for a in items]
    producer = bus.Producer(settings, client_id="test")

    def produce() -> None:
        for i in range(0, N_ARTICLES, 5):
            sup.produce(settings, producer, items[i:i + 5])
            time.sleep(0.1)

    try:
        sup.wait_until(lambda: all(sup.assigned(p) for p in logs.glob("*.log")), 120)
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
        sup.stop(p for group in procs.values() for p in group)
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
