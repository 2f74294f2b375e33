"""Hostile feed cases through the real ingest, classify and alerts processes on to local Slack, Teams and
webhook receivers; what came out at each channel checked for anything a renderer would act on.

Used by tests/integration/test_hostile_pipeline.py (a sample) and ``python -m bench.hostile`` (every case).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.fixtures.hostile.cases import Case
from tests.integration import faults_support as fs
from tests.integration.alerts_support import Receiver
from tests.integration.guarantee_support import read_all
from tests.integration.ingest_server import FeedServer, respond
from wirewatch.identity import feed_id
from wirewatch.settings import Settings

OUTCOME_EVENTS = ("feed_polled", "feed_fetch_failed", "feed_parse_failed", "feed_not_modified", "feed_unchanged")
_SLACK_OWN_LINK = re.compile(r"<https?://[^\s<>|]+\|Open article>")
_SLACK_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_MD_LIVE = re.compile(r"(?<!\\)[\[\]*_`#|~]")


def handler(case: Case, stall_s: float = 20.0) -> Callable[[BaseHTTPRequestHandler], None]:
    """How the feed server answers ``case`` (a stall sends half the body, then nothing for ``stall_s``)."""
    headers = {"Content-Type": "application/rss+xml; charset=utf-8"} | case.headers
    if case.serve == "static":
        return lambda h: respond(h, 200, case.body, headers)

    def stall(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", headers["Content-Type"])
        h.send_header("Content-Length", str(len(case.body)))
        h.end_headers()
        try:
            h.wfile.write(case.body[: len(case.body) // 2])
            h.wfile.flush()
            time.sleep(stall_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True
    return stall


def _strings(node: Any, key: str = "") -> list[tuple[str, str, Any]]:
    """Every (key, string, parent) in a JSON document."""
    if isinstance(node, dict):
        return [t for k, v in node.items() for t in (_strings(v, k) if not isinstance(v, str) else [(k, v, node)])]
    if isinstance(node, list):
        return [t for v in node for t in _strings(v, key)]
    return []


def slack_problems(doc: dict[str, Any]) -> list[str]:
    """What in a Slack message a client would parse: raw ``<``/``>`` (mentions, links), bare ``&``."""
    out = []
    for key, text, _ in _strings(doc):
        if key != "text":
            continue
        rest = _SLACK_OWN_LINK.sub("", text)
        if "<" in rest or ">" in rest or _SLACK_ENTITY.search(rest):
            out.append(f"slack unescaped: {text[:120]!r}")
        if _CONTROL.search(text):
            out.append(f"slack control characters: {text[:120]!r}")
    return out


def teams_problems(doc: dict[str, Any]) -> list[str]:
    """Raw tags, unescaped Markdown or control characters in an Adaptive Card's text."""
    out = []
    card = doc["attachments"][0]["content"]
    for key, text, parent in _strings(card):
        if key in ("text", "value") or (key == "title" and parent.get("type") != "Action.OpenUrl"):
            if "<" in text or ">" in text:
                out.append(f"teams raw tag: {text[:120]!r}")
            if _MD_LIVE.search(text) or _CONTROL.search(text):
                out.append(f"teams live markdown/control: {text[:120]!r}")
    for action in card.get("actions", []):
        if not re.match(r"^https?://[^\s<>\"'|`]+$", action.get("url", "")):
            out.append(f"teams unsafe action url: {action.get('url')!r:.120}")
    return out


def webhook_problems(body: bytes) -> list[str]:
    """A webhook body must be JSON, its feed text one clean line, its URLs plain http(s)."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        return [f"webhook not JSON: {exc}"]
    out = [f"webhook control characters in {k}: {t[:80]!r}" for k, t, _ in _strings(doc)
           if k in ("title", "summary", "heading", "source") and _CONTROL.search(t)]
    out += [f"webhook unsafe url {i.get('url')!r:.120}" for i in doc.get("items", [])
            if i.get("url") is not None and not re.match(r"^https?://[^\s<>\"'|`]+$", i["url"])]
    return out


@dataclass
class Report:
    """Figures of one hostile run."""

    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    unlogged: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    fetches_counted: float = 0.0
    items_counted: dict[str, float] = field(default_factory=dict)
    articles: int = 0
    matches: int = 0
    notified: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rss_peak_mib: dict[str, float] = field(default_factory=dict)
    alive: dict[str, bool] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)
    crashed_polls: int = 0
    seconds: float = 0.0
    log_dir: str = ""

    def summary(self) -> str:
        return (f"{self.cases} cases in {self.seconds:.0f}s: outcomes {dict(self.outcomes.most_common())}; "
                f"fetches counted {self.fetches_counted:.0f}; items {self.items_counted}; {self.articles} articles, "
                f"{self.matches} matches; notifications {self.notified}; escaping problems {len(self.problems)}; "
                f"unlogged {len(self.unlogged)}, unexpected {len(self.unexpected)}; peak RSS MiB "
                f"{ {k: round(v) for k, v in self.rss_peak_mib.items()} }; alive {self.alive}; crashed polls "
                f"{self.crashed_polls}; tracebacks {self.tracebacks or 'none'}")


def _drained(w: fs.Workers, settings: Settings) -> bool:
    """True when classify has consumed every article ingest produced and alerts every match classify produced."""
    topics = settings.kafka.topics
    ingest = w.metrics("ingest")
    produced = sum(fs.total(ingest, "wirewatch_ingest_items_total", kind=k) for k in ("new", "updated"))
    classify = w.metrics("classify")
    alerts = w.metrics("alerts")
    return (produced > 0
            and fs.total(classify, "wirewatch_bus_consumed_total", topic=topics.articles) >= produced
            and fs.total(alerts, "wirewatch_bus_consumed_total", topic=topics.matches)
            >= fs.total(classify, "wirewatch_classify_matches_total"))


def run(cases: list[Case], build: Callable[..., Settings], work: Path, *, timeout_s: float = 600) -> Report:
    """Serve ``cases``, run the pipeline until every case has an outcome and the channels went quiet."""
    started = time.monotonic()
    rep = Report(cases=len(cases), log_dir=str(work / "logs"))
    server = FeedServer().start()
    rx = {k: Receiver().__enter__() for k in ("webhook", "slack", "teams")}
    try:
        for c in cases:
            server.routes[f"/h/{c.name}"] = handler(c)
        urls = {c.name: server.url(f"/h/{c.name}") for c in cases}
        settings, cfg = fs.pipeline_config(build, work / "hostile.toml", feeds=list(urls.values()),
                                           subs=fs.channel_subs({k: r.url for k, r in rx.items()}))
        ids = {feed_id(u): name for name, u in urls.items()}
        deadline = started + timeout_s
        with fs.workers(settings, cfg, work / "logs") as w:
            def outcomes() -> dict[str, str]:
                got: dict[str, str] = {}
                for ev in w.events("ingest", *OUTCOME_EVENTS):
                    name = ids.get(str(ev.get("feed_id")))
                    if name is not None:
                        got.setdefault(name, f"{ev['event']}:{ev.get('outcome', ev.get('status', ''))}")
                return got
            while time.monotonic() < deadline and len(outcomes()) < len(cases):
                time.sleep(1)
            # Every article ingest produced is consumed by classify and every match by alerts before the
            # channels are judged quiet: a pause in classify (a rebalance, a slow batch) is not the end.
            while time.monotonic() < deadline and not _drained(w, settings):
                time.sleep(1)
            # The channels have gone quiet: the same count, above zero, at every receiver for eight seconds
            # running (zero is classify still loading its model).
            last, since = (-1, -1, -1), time.monotonic()
            while time.monotonic() < deadline:
                now = tuple(len(r.accepted) for r in rx.values())
                if now != last:
                    last, since = now, time.monotonic()  # type: ignore[assignment]
                elif time.monotonic() - since > 8 and len(set(now)) == 1 and now[0] > 0:
                    break
                time.sleep(1)
            got = outcomes()
            for name, c in ((c.name, c) for c in cases):
                o = got.get(name)
                if o is None:
                    rep.unlogged.append(name)
                    continue
                rep.outcomes[o] += 1
                published = o.startswith("feed_polled")
                if (c.expect == "refused" and published) or (c.expect == "articles" and not published):
                    rep.unexpected.append(f"{name}: {o} (expected {c.expect})")
            m = w.metrics("ingest")
            rep.fetches_counted = fs.total(m, "wirewatch_ingest_fetches_total")
            rep.items_counted = {k.split('"')[1]: v for k, v in m.items()
                                 if k.startswith("wirewatch_ingest_items_total{") and v}
            rep.rss_peak_mib = {r: w.memory_mib(r)[1] for r in w.procs}
            rep.alive = w.alive()
            rep.crashed_polls = len(w.events("ingest", "feed_poll_crashed"))
        rep.tracebacks = fs.tracebacks(w)
        rep.articles = len({k for k, _ in read_all(settings, settings.kafka.topics.articles)})
        rep.matches = len({k for k, _ in read_all(settings, settings.kafka.topics.matches)})
        rep.notified = {k: len(r.accepted) for k, r in rx.items()}
        check = {"slack": lambda q: slack_problems(q["json"]), "teams": lambda q: teams_problems(q["json"]),
                 "webhook": lambda q: webhook_problems(q["body"])}
        for kind, r in rx.items():
            for q in r.accepted:
                rep.problems += check[kind](q)
    finally:
        for r in rx.values():
            r.__exit__()
        server.stop()
    rep.seconds = time.monotonic() - started
    return rep
