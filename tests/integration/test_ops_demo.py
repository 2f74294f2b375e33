"""``wirewatch demo`` end to end on the session's Kafka and Redis, on free ports, in a temp data dir.

The demo is run as an operator runs it (the console script), stopped with Ctrl-C (SIGINT) once the webhook
receiver printed an alert, and must leave nothing running and nothing behind in Kafka.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
from kafka import KafkaAdminClient

from wirewatch.ops.roles import role_commands
from wirewatch.settings import Settings
from wirewatch.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WIREWATCH = str(Path(sys.executable).with_name("wirewatch"))


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _hop_count(port: int | None, hop: str) -> float:
    """How many latencies of ``hop`` the service on ``port`` has observed (0 when it does not answer)."""
    import httpx

    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    found = re.search(rf'^wirewatch_pipeline_hop_seconds_count{{hop="{hop}"}} (\S+)$', body, re.M)
    return float(found.group(1)) if found else 0.0


def _sign_in(out: str, port: int) -> int:
    """POST the demo key printed in ``out`` to the dashboard's login; returns the HTTP status."""
    import httpx

    found = re.search(r"demo key (ww_\S+);", out)
    if found is None:
        return 0
    r = httpx.post(f"http://127.0.0.1:{port}/ui/login", data={"api_key": found.group(1)}, timeout=10)
    return r.status_code


def _wait_story_reports(out: str, port: int, want: int, timeout_s: float) -> int:
    """Poll the API (with the demo key in ``out``) until an Aleppo story holds ``want`` reports; the most seen."""
    import httpx

    found = re.search(r"demo key (ww_\S+);", out)
    best, deadline = 0, time.monotonic() + timeout_s
    while found is not None and best < want and time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/stories", params={"topic": "aleppo-ceasefire"},
                          headers={"X-API-Key": found.group(1)}, timeout=5)
            if r.status_code == 200:
                best = max([best, *(s["article_count"] for s in r.json())])
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return best


def test_demo_shows_alerts_within_the_first_minute_and_ctrl_c_stops_everything(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from wirewatch.cli import app

    installed = {r for r, words in role_commands(app).items() if words}
    assert {"ingest", "classify", "alerts"} <= installed, installed
    base = make_settings(
        data_dir=str(tmp_path),
        api={"port": free_port()},
        ingest={"metrics_port": free_port()},
        classify={"metrics_port": free_port()},
        alerts={"metrics_port": free_port()},
        ops={"metrics_port": free_port(), "drain_timeout_s": 15},
    )
    cfg = tmp_path / "base.toml"
    cfg.write_text(tomli_w.dumps(base.model_dump(mode="json", exclude_none=True)))
    proc = subprocess.Popen([WIREWATCH, "--config", str(cfg), "demo", "--keep-stack", "--speed", "3",
                             "--duration", "150"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        deadline = started + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if any(" ALERT [" in line for line in lines):
                break
            time.sleep(0.5)
        first_alert_s = time.monotonic() - started
        signed_in = _sign_in("\n".join(lines), base.api.port)
        # Let the rest of the story's outlets arrive (near-duplicates must not alert again): the feed server
        # releases them over ~17 s, so wait until the story holds five reports (or a minute passed), then 3 s
        # more for a duplicate alert to show if there were one.
        folded = _wait_story_reports("\n".join(lines), base.api.port, 5, 60)
        time.sleep(3)
        hops = {hop: _hop_count(port, hop) for hop, port in (
            ("fetch", base.ingest.metrics_port), ("classify", base.classify.metrics_port),
            ("deliver", base.alerts.metrics_port), ("end_to_end", base.alerts.metrics_port))}
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    out = "\n".join(lines)
    assert code == 0, out
    assert first_alert_s < 60, out
    header = out.split("[00:", 1)[0]
    assert re.search(r"feed server:\s+http://127\.0\.0\.1:\d+/", header), out
    assert f"dashboard:    http://127.0.0.1:{base.api.port}/ui/  (sign in with the demo key ww" in header
    assert "metrics:      http://127.0.0.1:" in header and "logs:" in header
    assert signed_in == 303, "the printed demo key did not sign in to the dashboard"
    # Each service exports its hop of the end-to-end latency (published > fetched > classified > delivered).
    assert all(n > 0 for n in hops.values()), hops
    alerts = [line for line in lines if " ALERT [" in line]
    assert alerts and all("Aleppo" in line for line in alerts), out  # only the Aleppo story alerts
    headings = [line.split("] ", 2)[-1] for line in alerts]
    assert len(headings) == len(set(headings)), out  # no article alerted twice
    # The wire story, its near-duplicate and its retitled copy are one story with the other outlets' reports of
    # the evacuation: one of them heads the alert (which one depends on how the reports fall into batches), the
    # others fold into it.
    copies = ("Ceasefire holds in Aleppo as evacuation of besieged districts",  # begins / starts
              "First buses leave eastern Aleppo under overnight truce")
    assert sum(h.startswith(copies) for h in headings) <= 1, out
    reports = [int(n) for n in re.findall(r"story \w+: (\d+) report\(s\) from", out)]
    assert folded >= 5 and reports and max(reports) >= 5, (folded, out)
    assert "article(s) from" in out and "source(s):" in out
    summary = out.split("Summary", 1)[1]
    fetched = int(re.search(r"(\d+) fetched", summary).group(1))  # type: ignore[union-attr]
    assert fetched > 0
    assert "removed this run's data" in summary
    # The malformed feed is what `wirewatch status` flags (in error, or read with parse problems).
    assert re.search(r"feeds needing a look \(\d+ of 9\): .*Broken Bulletin: (malformed|error)", summary), summary
    log_dir = next((tmp_path / "demo" / "logs").iterdir())
    assert {p.name for p in log_dir.iterdir()} >= {"ingest.log", "classify.log", "alerts.log"}
    assert _processes_mentioning(str(tmp_path / "demo" / "wirewatch-demo.toml")) == []
    admin = KafkaAdminClient(bootstrap_servers=base.bootstrap_servers)
    try:
        leftovers = [t for t in admin.list_topics() if ".demo-" in t and t.startswith(base.kafka.topics.articles)]
    finally:
        admin.close()
    assert leftovers == []
