"""``bench.e2e`` on a tiny run: a few dozen articles through the real ingest, one classify and alerts process,
on its own private Kafka and redis-server, then through classify alone; nothing may be lost and the JSON keeps
its keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_tiny_end_to_end_run_loses_nothing_and_reports_its_keys() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.e2e", "--articles", "30", "--feeds", "3", "--configs",
                           "auto:1", "--latency-rate", "0", "--run-timeout", "150", "--warmup", "10", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=360,
                          env=os.environ | {"HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    for key in ("articles_per_s", "p99_fetch_to_notify_s", "lost", "cpu", "runs", "duplicates",
                "classify_only_articles_per_s", "e2e_over_classify_only"):
        assert key in doc, key
    assert doc["lost"] == 0, (doc["runs"][0]["lost_detail"], proc.stderr[-4000:])
    assert doc["duplicates"] == 0
    assert doc["warmup"]["articles"] == 10 and doc["warmup"]["lost"] == 0  # counted in nothing but the loss
    run = doc["runs"][0]
    assert run["on_kafka"] == 30
    assert run["articles_per_s"] > 0
    assert set(run["hops"]) >= {"fetch_to_notify", "kafka_to_classified"}
    alone = run["classify_only"]
    assert alone["articles"] == 30 and alone["not_committed"] == 0, proc.stderr[-4000:]
    assert doc["classify_only_articles_per_s"] == alone["articles_per_s"] > 0
    assert doc["e2e_over_classify_only"] == run["articles_per_s"] / alone["articles_per_s"]
    assert set(alone["processes"]) == {"classify-0"}
    span = run["span"]  # each process's share while classify worked through the backlog
    assert set(span["processes"]) == {"ingest", "classify-0", "alerts"}
    assert 0 < span["seconds"] <= run["articles"] / run["articles_per_s"] + 3.0  # from the release, not the first fetch
    assert span["processes"]["classify-0"]["cpu_s"] > 0 and "machine_busy_cores" in span["shared"]
    assert "model" in doc["cpu"] and "AVX2" in doc["cpu"]["flags"]
