"""``wirewatch run`` with the real stage commands: starts each role as its own process, exports the
supervisor's metrics and group lag, and drains on SIGTERM within the bound; bad options get exit 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from wirewatch import bus
from wirewatch.settings import Settings
from wirewatch.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WIREWATCH = str(Path(sys.executable).with_name("wirewatch"))


def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _config(make_settings: Callable[..., Settings], tmp_path: Path) -> tuple[Settings, Path]:
    s = make_settings(data_dir=str(tmp_path), ingest={"metrics_port": free_port()},
                      classify={"metrics_port": free_port()}, alerts={"metrics_port": free_port()},
                      api={"port": free_port()},
                      ops={"metrics_port": free_port(), "drain_timeout_s": 20, "lag_interval_s": 1})
    bus.ensure_default_topics(s)
    cfg = tmp_path / "run.toml"
    cfg.write_text(tomli_w.dumps(s.model_dump(mode="json", exclude_none=True)))
    return s, cfg


def test_run_supervises_real_roles_and_sigterm_drains_them_within_the_bound(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    s, cfg = _config(make_settings, tmp_path)
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen([WIREWATCH, "--config", str(cfg), "--log-format", "json", "run", "--no-stack",
                             "--only", "ingest", "--only", "alerts", "--log-dir", str(log_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            alerts_log = log_dir / "alerts.log"
            ready = alerts_log.exists() and '"partitions_assigned"' in alerts_log.read_text(errors="replace") \
                and (log_dir / "ingest.log").exists()
            time.sleep(0.5)
        assert ready, proc.stdout.read() if proc.poll() is not None and proc.stdout else "not ready"
        time.sleep(1.5)  # one lag measurement
        body = urllib.request.urlopen(f"http://127.0.0.1:{s.ops.metrics_port}/metrics", timeout=5).read().decode()
        assert 'wirewatch_ops_up{role="ingest"} 1.0' in body
        assert 'wirewatch_ops_up{role="alerts"} 1.0' in body
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert took < s.ops.drain_timeout_s, took
    events = _events(out)
    started_roles = {e["role"] for e in events if e.get("event") == "worker_started"}
    assert started_roles == {"ingest", "alerts"}
    stopped = {e["role"]: e for e in events if e.get("event") == "worker_stopped"}
    assert set(stopped) == {"ingest", "alerts"}
    assert not [e for e in events if e.get("event") == "worker_killed"]
    assert next(e for e in events if e.get("event") == "supervisor_stopped")["killed"] == 0
    assert not [e for e in events if e.get("event") == "worker_exited"], "a worker crashed during the run"
    codes = {r: e["exit_code"] for r, e in stopped.items()}
    print(f"\nrun: drained in {took:.1f}s; exit codes {codes}")


def test_unknown_role_gets_exit_2_and_starts_nothing(make_settings: Callable[..., Settings],
                                                    tmp_path: Path) -> None:
    _, cfg = _config(make_settings, tmp_path)
    done = subprocess.run([WIREWATCH, "--config", str(cfg), "run", "--no-stack", "--only", "scheduler"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "unknown role(s) scheduler" in done.stderr
    bad_scale = subprocess.run([WIREWATCH, "--config", str(cfg), "run", "--no-stack", "--scale", "api=2"],
                               capture_output=True, text=True, timeout=60, check=False)
    assert bad_scale.returncode == 2
    assert "expected ROLE=N" in bad_scale.stderr
    assert not (tmp_path / "logs").exists()


def test_exporter_publishes_group_lag_per_partition_and_stops_on_sigterm(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    s, cfg = _config(make_settings, tmp_path)
    producer = bus.Producer(s, client_id="test")
    producer.send_many([bus.Outgoing(s.kafka.topics.articles, f"k{i}", b"{}") for i in range(12)])
    handled: list[bus.Consumed[bytes]] = []

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        handled.extend(batch)
        loop.stop()

    loop = bus.ConsumerLoop(s, topics=[s.kafka.topics.articles], group="test-exporter", decode=lambda b: b,
                            handle=handle, producer=producer, config=bus.LoopConfig(batch_size=5, max_wait_ms=2000))
    loop.run()
    producer.close()
    proc = subprocess.Popen([WIREWATCH, "--config", str(cfg), "exporter"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{s.ops.metrics_port}/metrics"
    body = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and 'group="test-exporter"' not in body:
            time.sleep(0.5)
            try:
                body = urllib.request.urlopen(url, timeout=5).read().decode()
            except OSError:
                continue
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lags = {}
    for line in body.splitlines():
        if line.startswith("wirewatch_ops_group_lag_messages{") and 'group="test-exporter"' in line:
            partition = int(line.split('partition="')[1].split('"')[0])
            lags[partition] = float(line.rsplit(" ", 1)[1])
    assert sum(lags.values()) == 12 - len(handled) and len(handled) == 5
    assert len(lags) == s.kafka.partitions
    assert f'wirewatch_ops_topic_end_offset{{partition="0",topic="{s.kafka.topics.articles}"}}' in body
    assert proc.returncode == 0
