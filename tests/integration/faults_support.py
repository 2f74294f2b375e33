"""The whole pipeline as an operator runs it, for the hostile-input, fault and soak runs.

One ``wirewatch <role>`` process per stage (ingest, classify, alerts), each with its own metrics port and
JSON log; every article matches topic ``everything`` (threshold 0, keyword ``quietitem`` excluded so bulk
entries load ingest without flooding the channels) and is its own story. Helpers read a process's memory
from /proc, its Prometheus metrics over HTTP and its log events, and run a redis-server of a test's own
(AOF on, as the local stack runs it) that a test may kill and start again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import tomli_w

from tests.integration import ops_support as sup
from tests.integration.alerts_support import Receiver, match, produce
from tests.integration.guarantee_support import GrowingFeed, read_all
from tests.integration.ingest_server import FeedServer
from wirewatch import bus, stack
from wirewatch.identity import article_id
from wirewatch.settings import Settings

EVERYTHING = {"id": "everything", "name": "Everything", "description": "any news at all", "examples": ["news"],
              "threshold": 0.0, "exclude": ["quietitem"]}
ROLES = ("ingest", "classify", "alerts")
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN|[+-]Inf)$")


def channel_subs(urls: dict[str, str]) -> list[dict[str, Any]]:
    """One instant subscription to ``everything`` per channel kind, ``{kind: receiver url}``."""
    return [{"id": f"sub-{kind}", "topic_id": "everything", "mode": "instant",
             "channel": {"type": kind, "target": url}} for kind, url in urls.items()]


def pipeline_config(build: Callable[..., Settings], path: Path, *, subs: list[dict[str, Any]],
                    feeds: list[str] = (), ingest: dict[str, Any] | None = None,  # type: ignore[assignment]
                    alerts: dict[str, Any] | None = None, topics: bool = True,
                    **overrides: Any) -> tuple[Settings, Path]:
    """Settings from ``build`` (a test's ``make_settings`` or a private stack's) written to ``path``; the
    Kafka topics are created unless ``topics`` is false (a private stack not started yet)."""
    ports = {r: stack.free_port() for r in ROLES}
    ing = {"min_interval_s": 1, "max_interval_s": 900, "default_interval_s": 600, "jitter": 0, "max_backoff_s": 600,
           "fetch_timeout_s": 8, "read_timeout_s": 3, "claim_lease_s": 5, "concurrency": 8,
           "per_host_concurrency": 8, "metrics_port": ports["ingest"],
           "feeds": [{"url": u, "interval_s": 900} for u in feeds]} | (ingest or {})
    base: dict[str, Any] = {
        "api": {"url_allowlist": ["127.0.0.1"]},
        "log": {"level": "info", "format": "json"},
        "ingest": ing,
        "classify": {"metrics_port": ports["classify"], "batch_size": 16, "max_wait_ms": 100, "threads": 1,
                     "backend": "onnx-int8", "topics": [EVERYTHING]},
        "alerts": {"metrics_port": ports["alerts"], "story_similarity": 1.0, "claim_lease_s": 5.0,
                   "session_timeout_ms": 6000, "backoff_initial_s": 0.2, "batch_size": 20,
                   "subscriptions": subs} | (alerts or {}),
    }
    settings = build(**(base | overrides))
    if topics:
        bus.ensure_default_topics(settings)
    path.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    return settings, path


class Workers:
    """The stage processes of one run; ``procs[role]`` is the current process of each."""

    def __init__(self, settings: Settings, cfg: Path, log_dir: Path, roles: tuple[str, ...] = ROLES) -> None:
        self.settings, self.cfg, self.log_dir = settings, cfg, log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()
        for role in roles:
            self.start(role)

    def start(self, role: str) -> None:
        self.procs[role] = sup.start(role, self.cfg, self.log_dir, self.starts[role])
        self.starts[role] += 1

    def logs(self, role: str) -> list[Path]:
        return sorted(self.log_dir.glob(f"{role}-*.log"))

    def events(self, role: str, *names: str) -> list[dict[str, Any]]:
        """JSON log events of every process of ``role`` so far (named ``names``, or all)."""
        out: list[dict[str, Any]] = []
        for log in self.logs(role):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{") and (not names or any(f'"{n}"' in line for n in names)):
                    with contextlib.suppress(ValueError):
                        ev = json.loads(line)
                        if not names or ev.get("event") in names:
                            out.append(ev)
        return out

    def ready(self) -> bool:
        """Classify and alerts hold partitions (ingest needs no group)."""
        return all(any(sup.assigned(p) for p in self.logs(r)) for r in ("classify", "alerts") if r in self.procs)

    def alive(self) -> dict[str, bool]:
        return {r: p.poll() is None for r, p in self.procs.items()}

    def memory_mib(self, role: str) -> tuple[float, float]:
        """(current RSS, peak RSS) of ``role``'s process in MiB, from /proc."""
        text = Path(f"/proc/{self.procs[role].pid}/status").read_text()
        got = {k: int(v.split()[0]) / 1024 for k, v in (ln.split(":", 1) for ln in text.splitlines())
               if k in ("VmRSS", "VmHWM")}
        return got.get("VmRSS", 0.0), got.get("VmHWM", 0.0)

    def metrics(self, role: str) -> dict[str, float]:
        """``name{labels}`` → value from ``role``'s /metrics (empty when it does not answer)."""
        port = getattr(self.settings, role).metrics_port
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = _METRIC.match(line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def stop(self) -> None:
        sup.stop(self.procs.values())


def total(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of ``name`` over every label set that has ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in metrics.items() if k.split("{")[0] == name and all(w in k for w in want))


def tracebacks(workers: Workers) -> list[str]:
    """Logs of any stage that hold a Python traceback (a crash, or an error swallowed with its stack)."""
    return [p.name for r in workers.procs for p in workers.logs(r) if "Traceback (most recent" in p.read_text(
        errors="replace")]


class OwnRedis:
    """A redis-server of one test's own on a free port, configured as the local stack runs it (AOF on)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = stack.free_port()
        (root / "redis.conf").write_text("\n".join([
            "bind 127.0.0.1", f"port {self.port}", "protected-mode yes", "daemonize no", f"dir {root}",
            "appendonly yes", "appendfsync everysec", "save ''", f"logfile {root / 'redis.log'}",
            "maxmemory-policy noeviction", ""]))
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([stack.redis_server_binary(), str(self.root / "redis.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while not stack.port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, down_s: float = 2.0, hard: bool = False) -> None:
        """Stop redis-server (SIGTERM: it flushes its AOF; ``hard``: SIGKILL), wait ``down_s``, start it again."""
        self.stop(signal.SIGKILL if hard else signal.SIGTERM)
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(20)

    def __enter__(self) -> OwnRedis:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextlib.contextmanager
def workers(settings: Settings, cfg: Path, log_dir: Path, roles: tuple[str, ...] = ROLES,
            ready_s: float = 120) -> Iterator[Workers]:
    """Start the stage processes, wait until classify and alerts hold partitions, always stop them."""
    w = Workers(settings, cfg, log_dir, roles)
    try:
        if not sup.wait_until(w.ready, ready_s, every_s=0.5):
            raise AssertionError(f"workers not ready after {ready_s:.0f}s; logs in {log_dir}")
        yield w
    finally:
        w.stop()


# --- the fault scenarios: each returns the figures the issue asks for --------------------------------------

@dataclass
class FaultResult:
    """One fault run: what was lost, repeated outside the acknowledged window, and how long recovery took.

    ``articles_lost`` / ``notifications_lost`` are ``None`` where the run has no such stage. A duplicate
    outside the acknowledged window is one (subscription, story) notified under two idempotency keys;
    repeats under one key are the window DESIGN.md allows (receivers drop them on the key).
    """

    name: str
    articles_lost: int | None
    notifications_lost: int | None
    duplicates: int
    recovery_s: float | None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        def f(v: int | None) -> str:
            return "n/a" if v is None else str(v)
        rec = "n/a" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        return (f"{self.name:<28} {f(self.articles_lost):>8} {f(self.notifications_lost):>8} "
                f"{self.duplicates:>6} {rec:>9}")


HEADER = f"{'fault':<28} {'art.lost':>8} {'ntf.lost':>8} {'dupes':>6} {'recov.s':>9}"


def _entries(feed: int, n: int) -> list[dict[str, str]]:
    out = []
    for j, (title, summary) in enumerate(sup.texts(n, seed=300 + feed)):
        link = f"https://faults.example/{feed}/{j}"
        out.append({"title": f"F{feed}-{j} {title}", "link": link, "guid": link, "description": summary})
    return out


def _notified(rx: Receiver) -> tuple[set[str], int, list[float]]:
    """Titles received, titles under more than one idempotency key, arrival times."""
    keys: dict[str, set[str]] = {}
    with rx.lock:
        for r in rx.accepted:
            keys.setdefault(r["json"]["items"][0]["title"], set()).add(r["headers"].get("Idempotency-Key", ""))
        at = [r["at"] for r in rx.accepted]
    return set(keys), sum(1 for v in keys.values() if len(v) > 1), at


def redis_restart_under_ingest(build: Callable[..., Settings], work: Path, *, feeds: int = 2, per_feed: int = 14,
                               every_s: float = 1.0, down_s: float = 3.0) -> FaultResult:
    """Feeds growing, all three stages running; redis-server (AOF) stopped and started a third of the way in."""
    server = FeedServer().start()
    growing = [GrowingFeed(_entries(i, per_feed), every_s) for i in range(feeds)]
    for i, g in enumerate(growing):
        server.routes[f"/f{i}"] = g
    urls = [server.url(f"/f{i}") for i in range(feeds)]
    with OwnRedis(work / "redis") as redis, Receiver() as rx:
        try:
            s, cfg = pipeline_config(
                build, work / "faults.toml", subs=channel_subs({"webhook": rx.url}), redis={"url": redis.url},
                ingest={"default_interval_s": 1, "max_interval_s": 2, "max_backoff_s": 2,
                        "feeds": [{"url": u, "interval_s": 1} for u in urls]})
            with workers(s, cfg, work / "logs") as w:
                for g in growing:
                    g.begin()
                time.sleep(per_feed * every_s / 3)
                redis.restart(down_s)
                back = time.monotonic()
                want = {e["title"] for g in growing for e in g.entries}
                sup.wait_until(lambda: all(g.done() for g in growing) and want <= _notified(rx)[0], 120, 0.5)
                time.sleep(3)
                alive = w.alive()
        finally:
            server.stop()
        served = {article_id(url=link, feed_url=u) for g, u in zip(growing, urls, strict=True) for link in g.served}
        on_kafka = [k for k, _ in read_all(s, s.kafka.topics.articles)]
        titles, dupes, at = _notified(rx)
        after = [t for t in at if t > back]
    return FaultResult("redis restart, ingest path", len(served - set(on_kafka)), len(want - titles), dupes,
                       (min(after) - back) if after else None,
                       f"redis down {down_s:.0f}s; {len(served)} served, {len(set(on_kafka))} on articles "
                       f"({len(on_kafka) - len(set(on_kafka))} repeats); {len(rx.accepted)} notifications; "
                       f"alive {alive}", {"alive": alive, "tracebacks": tracebacks(w)})


def _stream_matches(s: Settings, n: int, per_s: float, prefix: str) -> tuple[threading.Thread, list[str]]:
    titles = [f"{prefix}-{i} {t}" for i, (t, _) in enumerate(sup.texts(n, seed=hash(prefix) % 1000))]

    def go() -> None:
        for i, t in enumerate(titles):
            produce(s, [match(f"{prefix}{i:04d}", t, topic="everything")])
            time.sleep(1 / per_s)
    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, titles


def redis_restart_under_alerts(build: Callable[..., Settings], work: Path, *, n: int = 60, per_s: float = 6.0,
                               down_s: float = 3.0) -> FaultResult:
    """Matches streaming into the alerts worker alone; redis-server (AOF) stopped and started mid-stream."""
    with OwnRedis(work / "redis") as redis, Receiver() as rx:
        s, cfg = pipeline_config(build, work / "faults.toml", subs=channel_subs({"webhook": rx.url}),
                                 redis={"url": redis.url})
        with workers(s, cfg, work / "logs", roles=("alerts",)) as w:
            th, titles = _stream_matches(s, n, per_s, "ra")
            time.sleep(n / per_s / 3)
            redis.restart(down_s)
            back = time.monotonic()
            th.join(60)
            sup.wait_until(lambda: set(titles) <= _notified(rx)[0], 90, 0.5)
            time.sleep(3)
            alive = w.alive()
        got, dupes, at = _notified(rx)
        after = [t for t in at if t > back]
    return FaultResult("redis restart, alerts path", None, len(set(titles) - got), dupes,
                       (min(after) - back) if after else None,
                       f"redis down {down_s:.0f}s; {n} matches, {len(rx.accepted)} notifications; alive {alive}",
                       {"alive": alive, "tracebacks": tracebacks(w)})


def channel_down(build: Callable[..., Settings], work: Path, *, down_s: float = 20.0, n: int = 40) -> FaultResult:
    """The webhook answers 503 for ``down_s`` while matches keep coming; then it is back."""
    state = {"down": False}
    per_s = n / (down_s + 10)

    def answer(_: Receiver, __: dict[str, Any]) -> tuple[int, dict[str, str]]:
        return (503, {}) if state["down"] else (200, {})
    with Receiver(behaviour=answer) as rx:
        # Retries are spread to outlast the outage: 1 s doubling to 10 s, 6 + down_s / 10 attempts.
        s, cfg = pipeline_config(build, work / "faults.toml", subs=channel_subs({"webhook": rx.url}),
                                 alerts={"backoff_initial_s": 1.0, "backoff_max_s": 10.0,
                                         "max_attempts": int(8 + down_s / 8)})
        with workers(s, cfg, work / "logs", roles=("alerts",)) as w:
            th, titles = _stream_matches(s, n, per_s, "cd")
            time.sleep(5)
            state["down"] = True
            time.sleep(down_s)
            state["down"] = False
            back = time.monotonic()
            th.join(60)
            sup.wait_until(lambda: set(titles) <= _notified(rx)[0], 60 + down_s, 0.5)
            done = time.monotonic()
            time.sleep(3)
            alive = w.alive()
        got, dupes, _ = _notified(rx)
        refused = len(rx.requests) - len(rx.accepted)
    return FaultResult(f"channel down {down_s:.0f}s", None, len(set(titles) - got), dupes,
                       done - back if set(titles) <= got else None,
                       f"{n} matches; {refused} sends refused while down; {len(rx.accepted)} accepted; "
                       f"recovery = channel back to the last held notification delivered; alive {alive}",
                       {"alive": alive, "tracebacks": tracebacks(w)})


class _Stalling:
    """A feed whose first ``stalls`` answers send half the body and then nothing for ``stall_s``."""

    def __init__(self, inner: GrowingFeed, stalls: int, stall_s: float) -> None:
        self.inner, self.stalls, self.stall_s = inner, stalls, stall_s
        self.served_stalled = 0
        self.recovered_at: float | None = None

    def __call__(self, h: BaseHTTPRequestHandler) -> None:
        if self.served_stalled < self.stalls:
            self.served_stalled += 1
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", "4000")
            h.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                h.wfile.write(b'<?xml version="1.0"?><rss version="2.0"><channel><title>stall</title><item>')
                h.wfile.flush()
                time.sleep(self.stall_s)
            h.close_connection = True
            return
        if self.recovered_at is None:
            self.recovered_at = time.monotonic()
        self.inner(h)


def feed_stall(build: Callable[..., Settings], work: Path, *, stalls: int = 2, stall_s: float = 8.0,
               per_feed: int = 10) -> FaultResult:
    """One feed host stalls mid-body on its first answers (the fetcher's read timeout cuts it); the other
    feeds go on; once the host answers again, every entry of every feed is on ``articles``."""
    server = FeedServer().start()
    growing = [GrowingFeed(_entries(i, per_feed), 0.5) for i in range(3)]
    stalling = _Stalling(growing[0], stalls, stall_s)
    server.routes["/f0"] = stalling
    for i in (1, 2):
        server.routes[f"/f{i}"] = growing[i]
    urls = [server.url(f"/f{i}") for i in range(3)]
    try:
        s, cfg = pipeline_config(build, work / "faults.toml", subs=[],
                                 ingest={"default_interval_s": 1, "max_interval_s": 2, "max_backoff_s": 2,
                                         "read_timeout_s": 2, "fetch_timeout_s": 4,
                                         "feeds": [{"url": u, "interval_s": 1} for u in urls]})
        w = Workers(s, cfg, work / "logs", roles=("ingest",))
        try:
            for g in growing:
                g.begin()
            want = {article_id(url=e["link"], feed_url=u) for g, u in zip(growing, urls, strict=True)
                    for e in g.entries}
            seen: set[str] = set()

            def all_in() -> bool:
                seen.update(k for k, _ in read_all(s, s.kafka.topics.articles))
                return want <= seen
            sup.wait_until(lambda: all(g.done() for g in growing) and all_in(), 90, 1.0)
            done = time.monotonic()
            alive = w.alive()
            failed = [e for e in w.events("ingest", "feed_fetch_failed")]
            peak = w.memory_mib("ingest")[1]
        finally:
            w.stop()
    finally:
        server.stop()
    on_kafka = [k for k, _ in read_all(s, s.kafka.topics.articles)]
    rec = done - stalling.recovered_at if stalling.recovered_at and want <= set(on_kafka) else None
    return FaultResult("feed host stalls mid-body", len(want - set(on_kafka)), None, 0, rec,
                       f"{stalls} stalled answers of {stall_s:.0f}s, {len(failed)} fetch failures logged "
                       f"({sorted({str(e.get('outcome')) for e in failed})}); {len(set(on_kafka))} articles "
                       f"({len(on_kafka) - len(set(on_kafka))} repeats); ingest peak RSS {peak:.0f} MiB; "
                       f"recovery = host answering again to every entry on articles; alive {alive}",
                       {"alive": alive, "tracebacks": tracebacks(w), "failed": len(failed)})
