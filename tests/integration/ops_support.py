"""Helpers for the ops tests that run real classify and alerts processes."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import tomli_w

from wirewatch import bus
from wirewatch.demo.feeds import data_text
from wirewatch.records import Article, encode, utcnow
from wirewatch.settings import Settings

WIREWATCH = str(Path(sys.executable).with_name("wirewatch"))
EVERYTHING = {"id": "everything", "name": "Everything", "description": "any news at all", "examples": ["news"],
              "threshold": 0.0}


def pipeline_settings(make_settings: Callable[..., Settings], tmp_path: Path, receiver_url: str,
                      **overrides: Any) -> tuple[Settings, Path]:
    """Settings where every article matches topic ``everything`` and is its own story, notified by webhook to
    ``receiver_url`` (subscription ``desk``); written to a config file for the worker processes."""
    base: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "api": {"url_allowlist": ["127.0.0.1"]},  # the receiver is on loopback, which the SSRF guard refuses
        "classify": {"metrics_port": 0, "batch_size": 16, "max_wait_ms": 100, "topics": [EVERYTHING]},
        "alerts": {"metrics_port": 0, "story_similarity": 1.0, "claim_lease_s": 5.0, "session_timeout_ms": 6000,
                   "backoff_initial_s": 0.2, "batch_size": 20,
                   "subscriptions": [{"id": "desk", "topic_id": "everything", "mode": "instant",
                                      "channel": {"type": "webhook", "target": receiver_url}}]},
        # Under ``wirewatch run``: no fixed metrics port, and a worker its group lost is restarted after 15 s.
        "ops": {"metrics_port": 0, "stall_after_s": 15.0, "lag_interval_s": 2.0, "drain_timeout_s": 20.0},
    }
    for k, v in overrides.items():
        base[k] = base.get(k, {}) | v if isinstance(v, dict) else v
    settings = make_settings(**base)
    bus.ensure_default_topics(settings)
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    return settings, cfg


# ``wirewatch`` itself, with every thread's stack written to the log on SIGUSR1 (see :func:`dump_stacks`).
_WIREWATCH_WITH_DUMPS = ("import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
                         "sys.argv[0] = 'wirewatch'; from wirewatch.cli import main; main()")


def start(role: str, cfg: Path, log_dir: Path, i: int = 0) -> subprocess.Popen[bytes]:
    """Start ``wirewatch <role>`` in its own process group, logging to ``log_dir/<role>-<i>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out = (log_dir / f"{role}-{i}.log").open("wb")
    return subprocess.Popen([sys.executable, "-c", _WIREWATCH_WITH_DUMPS, "--config", str(cfg), "--log-format",
                             "json", role], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def dump_stacks(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Ask each live worker started by :func:`start` to write all its threads' stacks to its log."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGUSR1)
    time.sleep(1)


def stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, then SIGKILL what is left after 30 s."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def assigned(log: Path) -> bool:
    """True once the process logged a non-empty partition assignment."""
    lines = log.read_bytes().splitlines() if log.exists() else []
    return any(b'"partitions_assigned"' in line and b'"partitions": []' not in line for line in lines)


def wait_until(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.3) -> bool:
    """Poll ``pred`` until it holds or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every_s)
    return bool(pred())


def texts(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """``n`` (title, summary) pairs of real words in random order: unrelated to each other."""
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{4,}", data_text("articles.toml"))})
    rng = random.Random(seed)
    return [(" ".join(rng.sample(words, 8)).capitalize(), " ".join(rng.sample(words, 25)) + ".") for _ in range(n)]


def articles(n: int, prefix: str = "a", seed: int = 7) -> list[Article]:
    """``n`` unrelated articles with URLs ``https://scale.example/<prefix>/<i>``."""
    now = utcnow()
    return [Article(id=f"{prefix}{i:05d}", url=f"https://scale.example/{prefix}/{i}", title=t, summary=s,
                    published_at=now, fetched_at=now, feed_url="https://scale.example/rss", source="Scale Test")
            for i, (t, s) in enumerate(texts(n, seed))]


def produce(settings: Settings, producer: bus.Producer, items: list[Article]) -> None:
    """Produce ``items`` to the articles topic and wait for the acks."""
    producer.send_many([bus.Outgoing(settings.kafka.topics.articles, a.id, encode(a)) for a in items])


class Pipeline:
    """``wirewatch run`` supervising classify and alerts replicas, as an operator runs them.

    The supervisor restarts a killed worker, and its watchdog restarts one that its consumer group lost
    (``ops.stall_after_s``); both show in ``run.out`` as ``worker_started`` / ``worker_stalled`` events.
    """

    def __init__(self, cfg: Path, log_dir: Path, scale: dict[str, int]) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        args = [WIREWATCH, "--config", str(cfg), "--log-format", "json", "run", "--no-stack", "--log-dir",
                str(log_dir)]
        for role, n in scale.items():
            args += ["--only", role, "--scale", f"{role}={n}"]
        self._out = (log_dir / "run.out").open("wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The supervisor's log events called ``name``, oldest first."""
        import json

        out = []
        for line in (self.log_dir / "run.out").read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def pid(self, role: str) -> int:
        """The pid of ``role``'s current process (``classify``, ``classify-1``...)."""
        return int([e for e in self.events("worker_started") if e["role"] == role][-1]["pid"])

    def ready(self) -> bool:
        """True once every worker logged a non-empty partition assignment."""
        logs = [p for p in self.log_dir.glob("*.log")]
        return bool(logs) and all(assigned(p) for p in logs)

    def stop(self) -> int:
        """SIGTERM the supervisor (it drains its workers); returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._out.close()
        return code
