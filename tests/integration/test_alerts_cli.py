"""The alerts commands: the worker as a real process (metrics, SIGTERM), test send, deliveries tail,
stories list and eval duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.integration.alerts_support import Receiver, match, produce, webhook_sub
from wirewatch import bus, stack
from wirewatch.cli import State, app
from wirewatch.settings import Settings

# Test receivers listen on loopback, which the SSRF guard refuses unless the operator allows it.
LOOPBACK = {"url_allowlist": ["127.0.0.1"]}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ALEPPO = "Evacuation of eastern Aleppo begins as first buses leave"
BOMB = "Car bomb kills 12 in Idlib market"
RATES = "Central bank raises interest rates by half a point"
PAIRS = [
    (ALEPPO, "First buses leave eastern Aleppo as evacuation begins", True),
    (ALEPPO, "Evacuation of Daraya begins as buses leave the town", False),
    (BOMB, "Twelve killed as car bomb hits market in Idlib", True),
    (BOMB, "Car bomb kills 12 in Aleppo market", False),
    (RATES, "Interest rates raised by half a point by the central bank", True),
    (RATES, "Floods cut power to thousands in the north", False),
]


def _env(s: Settings) -> dict[str, str]:
    dump = s.model_dump(mode="json")
    env = dict(os.environ)
    for section in ("kafka", "redis", "stack", "alerts", "api"):
        env[f"WIREWATCH_{section.upper()}"] = json.dumps(dump[section])
    env["WIREWATCH_LOG"] = json.dumps({"level": "info", "format": "json"})
    return env


def _cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wirewatch.cli", *args], env=_env(s), capture_output=True,
                          text=True, timeout=240)


def test_worker_process_serves_metrics_and_stops_cleanly_on_sigterm(make_settings: Callable[..., Settings]) -> None:
    port = stack.free_port()
    with Receiver(secret="s3cret") as rx:
        s = make_settings(api=LOOPBACK, alerts={"subscriptions": [webhook_sub("desk", rx.url).model_dump(mode="json")],
                                  "metrics_port": port})
        bus.ensure_default_topics(s)
        proc = subprocess.Popen([sys.executable, "-m", "wirewatch.cli", "alerts"], env=_env(s),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            produce(s, [match("m1", "Ceasefire agreed in Deraa province")])
            assert rx.wait_for(1, 60)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            err = proc.stderr.read().decode() if proc.stderr else ""
    assert 'wirewatch_alerts_send_attempts_total{channel="webhook",outcome="sent"} 1.0' in text
    assert "wirewatch_alerts_latency_seconds_count" in text
    assert rc == 0 and "alerts_stopped" in err


def test_alerts_test_deliveries_tail_and_stories_list(make_settings: Callable[..., Settings]) -> None:
    with Receiver(secret="s3cret") as rx:
        s = make_settings(api=LOOPBACK, alerts={"subscriptions": [webhook_sub("desk", rx.url).model_dump(mode="json")],
                                  "metrics_port": None})
        bus.ensure_default_topics(s)
        out = _cli(s, "alerts", "test", "desk")
        assert out.returncode == 0, out.stderr
        assert "sent test notification to desk" in out.stdout
        assert rx.accepted and rx.accepted[0]["json"]["kind"] == "test"
        missing = _cli(s, "alerts", "test", "nobody")
        assert missing.returncode == 2 and "no subscription 'nobody'" in missing.stderr
        produce(s, [match("m1", "Ceasefire agreed in Deraa province", source="Reuters"),
                    match("m2", "Ceasefire agreed in Deraa province", source="AFP")])
        worker = subprocess.Popen([sys.executable, "-m", "wirewatch.cli", "alerts"], env=_env(s),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert rx.wait_for(2, 60)
            time.sleep(1.0)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    tail = _cli(s, "deliveries", "tail", "--no-follow", "--subscription", "desk")
    assert tail.returncode == 0
    assert "sent" in tail.stdout and "suppressed" in tail.stdout and "story_already_alerted" in tail.stdout
    stories = _cli(s, "stories", "list", "--topic", "syria")
    assert stories.returncode == 0 and "Ceasefire agreed in Deraa province" in stories.stdout
    assert stories.stdout.splitlines()[1].split()[2:4] == ["2", "2"]  # 2 articles, 2 sources


def test_eval_duplicates_json_and_table(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"a": a, "b": b, "is_duplicate": d}) for a, b, d in PAIRS) + "\n")
    runner = CliRunner()
    State._settings = None
    result = runner.invoke(app, ["eval", "duplicates", "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"precision", "recall", "f1", "threshold", "best_threshold", "best_f1", "pairs"}
    assert report["pairs"] == 6 and report["best_f1"] >= report["f1"]
    print("eval duplicates on the six sample pairs:", report)
    assert report["precision"] == 1.0  # none of the different-event pairs is folded at the default threshold
    table = runner.invoke(app, ["eval", "duplicates", "--data", str(data)])
    assert table.exit_code == 0 and "configured" in table.stdout and "best F1" in table.stdout


def test_eval_duplicates_bad_file_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"a": "x", "b": "y", "is_duplicate": True}) + "\n" + '{"a": "x", "b": 3}\n')
    State._settings = None
    result = CliRunner().invoke(app, ["eval", "duplicates", "--data", str(data)])
    assert result.exit_code == 2 and "pairs.jsonl:2" in result.output
