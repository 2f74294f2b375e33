"""kill -9 of the alerts worker at random points, against the real Kafka and Redis and a real receiver.

Each round produces a few new stories (and a copy of an earlier one from another outlet), starts
``wirewatch alerts`` as a subprocess, waits until it owns its partitions, and SIGKILLs it at a random
moment while it folds, decides, sends and commits. A last run drains everything. Then: every expected
(subscription, story) arrived; none arrived twice except with the same idempotency key (the window between
a channel's acknowledgement and the ledger write); copies from other outlets never alerted.
Set WIREWATCH_CRASH_SEED to replay a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.alerts_support import Receiver, match, produce, read_deliveries, webhook_sub
from wirewatch import bus
from wirewatch.records import DeliveryStatus
from wirewatch.settings import Settings

# Test receivers listen on loopback, which the SSRF guard refuses unless the operator allows it.
LOOPBACK = {"url_allowlist": ["127.0.0.1"]}

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]
ROUNDS = 8
WINDOW_S = 2.0  # answered-but-not-yet-recorded window, generous for a CPU-starved 2-core box
LATE_S = 1.0
PER_ROUND = 5
SUBS = 3
WORDS = ("ministry harbour election drought vaccine pipeline bridge strike tariff festival satellite court "
         "railway refinery museum stadium protest budget reactor glacier airline census merger treaty wildfire "
         "cyclone subway orchestra lottery telescope vineyard factory bakery ferry prison archive").split()


def _headline(rng: random.Random) -> str:
    """A headline unlike any other: these stories are distinct by construction (folding is tested elsewhere)."""
    return " ".join(rng.sample(WORDS, 7)).capitalize()


def _env(s: Settings, instance: str) -> dict[str, str]:
    dump = s.model_dump(mode="json")
    env = dict(os.environ)
    for section in ("kafka", "redis", "stack", "alerts", "api"):
        env[f"WIREWATCH_{section.upper()}"] = json.dumps(dump[section])
    env["WIREWATCH_ALERTS"] = json.dumps(dump["alerts"] | {"group_instance_id": instance})
    env["WIREWATCH_LOG"] = json.dumps({"level": "info", "format": "json"})
    env["WIREWATCH_DATA_DIR"] = str(dump["data_dir"])
    return env


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "wirewatch.cli", "alerts"], env=env,
                                stdout=subprocess.DEVNULL, stderr=fh)


def _wait_assigned(log: Path, seen: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.read_text(errors="replace").count("partitions_assigned") > seen:
            return True
        time.sleep(0.05)
    return False


def test_kill_9_at_random_points_loses_nothing_and_repeats_only_with_the_same_key(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    seed = int(os.environ.get("WIREWATCH_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)

    def slow(rx: Receiver, req: dict[str, Any]) -> tuple[int, dict[str, str]]:
        time.sleep(rng.uniform(0.005, 0.05))  # sends in flight when the kill lands
        return 200, {}

    with Receiver(secret="s3cret", behaviour=slow) as rx:
        subs = [webhook_sub(f"s{i}", f"{rx.url}?sub={i}") for i in range(SUBS)]
        s = make_settings(api=LOOPBACK,
                          alerts={"subscriptions": [x.model_dump(mode="json") for x in subs], "metrics_port": None,
                                  "claim_lease_s": 2.0, "backoff_initial_s": 0.2, "max_wait_ms": 20,
                                  "session_timeout_ms": 6000, "batch_size": 4})
        bus.ensure_default_topics(s)
        env = _env(s, "crash-test-worker")
        log = tmp_path / "worker.log"
        log.touch()
        firsts: list[str] = []
        produced = 0
        kills, kill_after, killed_at = 0, [], []
        started = time.monotonic()
        for r in range(ROUNDS):
            proc = _start(env, log)
            assert _wait_assigned(log, r), f"no partitions in round {r}; log: {log.read_text()[-2000:]}"
            batch = [match(f"r{r}-{i}", _headline(rng)) for i in range(PER_ROUND)]
            if firsts:  # a copy of an earlier story from another outlet: must fold, never alert
                earlier = rng.choice([m for m in firsts])
                batch.append(match(f"copy{r}", earlier, source="Another Outlet"))
            produce(s, batch)
            firsts.extend(m.article.title for m in batch[:PER_ROUND])
            produced += len(batch)
            delay = rng.uniform(0.0, 1.2)
            time.sleep(delay)
            killed_at.append(time.monotonic())
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            kill_after.append(round(delay, 2))
        kill_phase = time.monotonic() - started
        # A story is known by its headline here: which of an original and its copy is folded first (and so
        # names the story) depends on where the kills fell.
        expected = {(f"s{i}", title) for i in range(SUBS) for title in firsts}
        proc = _start(env, log)
        try:
            assert _wait_assigned(log, ROUNDS, 60), f"the draining run got no partitions: {log.read_text()[-2000:]}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(_arrived(rx)) < len(expected):
                time.sleep(0.2)
            time.sleep(3.0)  # a late repeat would show up now
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
    arrived = _arrived(rx)
    counts = Counter(_pair(r) for r in rx.accepted)
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for req in rx.accepted:
        keys[_pair(req)].add(req["headers"]["Idempotency-Key"])
    repeats = {k: n for k, n in counts.items() if n > 1}
    # A repeat is legitimate only if its first copy reached the receiver just before a kill: the receiver
    # answered, the worker died before it could read the answer and write the ledger.
    first_at = {k: min(r["at"] for r in rx.accepted if _pair(r) == k) for k in repeats}
    # (The receiver stamps a request when its handler thread runs, which on a busy box can be a few ms after
    # the kill of a sender whose request was already on the wire.)
    gaps = {k: min((kt - t for kt in killed_at if kt - t >= -LATE_S), default=float("inf"))
            for k, t in first_at.items()}
    near_kill = {k for k, g in gaps.items() if g <= WINDOW_S}
    # Otherwise the sender must have recorded that it never got the answer (a transport error, then a retry):
    # the receiver took the request but its acknowledgement was lost, which widens the same window.
    unacked = {d.idempotency_key for d in read_deliveries(s, 1, 10)
               if d.status == DeliveryStatus.FAILED and d.reason.startswith("retry in") and "HTTP" not in d.reason}
    lost_ack = {k for k in repeats if k not in near_kill and keys[k] <= unacked}
    outside = [k for k in repeats if k not in near_kill and k not in lost_ack]
    print(f"\ncrash test (seed {seed}): {kills} kills in {kill_phase:.0f}s (after {kill_after} s of work), "
          f"{produced} matches produced, {len(expected)} notifications expected, {len(rx.accepted)} received, "
          f"{len(arrived & expected)} distinct expected arrived, {len(arrived - expected)} unexpected, "
          f"{len(repeats)} repeated (same key: {all(len(keys[k]) == 1 for k in repeats)}; first copy "
          f"{max((gaps[k] for k in near_kill), default=0):.2f}s or less before a kill, "
          f"{-min((gaps[k] for k in near_kill), default=0):.2f}s or less after it: {len(near_kill)}, "
          f"lost acknowledgement recorded by the sender: {len(lost_ack)}), "
          f"bad signatures {rx.bad_signatures}, clean stop rc={rc}")
    assert expected <= arrived, f"missing: {sorted(expected - arrived)[:10]}"
    assert not arrived - expected, f"copies alerted: {sorted(arrived - expected)[:10]}"
    assert all(len(v) == 1 for v in keys.values()), "a (subscription, story) arrived under two keys"
    assert not outside, f"repeats not explained by a kill: {outside[:5]}"
    assert rx.bad_signatures == 0 and rc == 0


def _pair(req: dict[str, Any]) -> tuple[str, str]:
    return req["json"]["subscription_id"], req["json"]["items"][0]["title"]


def _arrived(rx: Receiver) -> set[tuple[str, str]]:
    with rx.lock:
        return {_pair(r) for r in rx.accepted}
