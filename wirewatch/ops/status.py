"""``wirewatch status``: one screen on the pipeline's health, gathered from the broker and Redis.

Each section is collected on its own; a section that cannot be read (Kafka down, no ingest state yet)
says why instead of failing the whole report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from wirewatch import stack
from wirewatch.log import describe_error
from wirewatch.ops.lag import Broker, PartitionLag, pipeline_topics
from wirewatch.records import Delivery, RecordError, decode
from wirewatch.settings import Settings

RATE_WINDOWS_S = (60.0, 300.0)


@dataclass
class FeedHealth:
    """A feed worth an operator's look: failing, disabled or gone quiet."""

    feed_id: str
    url: str
    problem: str
    detail: str = ""


@dataclass
class Report:
    """Everything ``status`` shows. ``errors`` maps a section to why it could not be read."""

    at: str
    stack: list[dict[str, Any]] = field(default_factory=list)
    lag: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    throughput: dict[str, dict[str, float]] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)
    feeds_total: int | None = None
    feeds: list[FeedHealth] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    delivery_counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def tail(broker: Broker, topic: str, n: int, *, timeout_s: float = 5.0) -> list[Any]:
    """The last ``n`` records of each partition of ``topic`` (raw consumer records), oldest first."""
    tps = broker.partitions(topic)
    if not tps:
        return []
    ends = broker.end_offsets(tps)
    begins = broker.beginning_offsets(tps)
    starts = {tp: max(begins[tp], ends[tp] - n) for tp in tps}
    wanted = {tp for tp in tps if ends[tp] > starts[tp]}
    if not wanted:
        return []
    consumer = broker.consumer
    consumer.assign(sorted(wanted))
    for tp in wanted:
        consumer.seek(tp, starts[tp])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while wanted and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=200).items():
            for r in records:
                if r.offset < ends[tp]:
                    out.append(r)
            if consumer.position(tp) >= ends[tp]:
                wanted.discard(tp)
    consumer.assign([])
    return sorted(out, key=lambda r: (r.timestamp, r.partition, r.offset))


def _section(report: Report, name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - Kafka, Redis, decode...: one bad section must not hide the rest
        report.errors[name] = describe_error(exc)


def _lag_row(r: PartitionLag) -> dict[str, Any]:
    return asdict(r)


def collect_feeds(settings: Settings, report: Report, now: float) -> None:
    """Fill the feed section from ingest's per-feed state in Redis (and the feeds registry)."""
    from wirewatch import registry, state

    client = state.connect(settings)
    try:
        feeds = {f.id: f for f in registry.feeds(client, settings).all()}
        try:
            from ingest.state import StateStore
        except ImportError:
            states: dict[str, Any] = {}
            report.errors["feed_state"] = "the ingest stage is not installed; showing registry feeds only"
        else:
            states = dict(StateStore(client, settings).load_all())
    finally:
        client.close()
    report.feeds_total = len(set(feeds) | set(states))
    for fid, feed in feeds.items():
        if not feed.enabled and fid not in states:
            report.feeds.append(FeedHealth(fid, feed.url, "disabled", feed.disabled_reason))
    quiet_factor = settings.ingest.quiet_factor if hasattr(settings.ingest, "quiet_factor") else 5.0
    for fid, st in sorted(states.items()):
        url = getattr(st, "url", "")
        if getattr(st, "disabled_reason", ""):
            report.feeds.append(FeedHealth(fid, url, "disabled", st.disabled_reason))
        elif getattr(st, "errors", 0):
            report.feeds.append(FeedHealth(fid, url, "error", f"{st.errors} failed fetch(es) in a row: "
                                           f"{st.last_outcome} {st.last_error}".strip()))
        elif getattr(st, "problem", ""):
            report.feeds.append(FeedHealth(fid, url, "malformed", f"parsed with problems ({st.problem}); "
                                           f"{getattr(st, 'entries', 0)} entries read"))
        else:
            quiet_s = settings.ops.quiet_after_s
            rate = getattr(st, "rate_per_h", None)
            if rate:
                quiet_s = max(quiet_factor * 3600.0 / rate, 3600.0)
            last = st.last_new_at or st.last_success_at
            if last and now - last > quiet_s:
                report.feeds.append(FeedHealth(fid, url, "quiet", f"nothing new for {_ago(now - last)}"))


def collect(settings: Settings, *, deliveries: int = 10) -> Report:
    """Gather the report; never raises for an unreachable service (the section records the error)."""
    now = time.time()
    report = Report(at=datetime.now(UTC).isoformat(timespec="seconds"))
    report.stack = [asdict(s) | {"ok": s.ok} for s in stack.status(settings)]
    kafka_ok = report.stack[0]["ok"]
    if kafka_ok:
        with Broker(settings) as broker:
            topics = pipeline_topics(settings)

            def lags() -> None:
                groups = broker.groups()
                info = broker.describe(groups)
                report.lag.extend(_lag_row(r) for r in broker.lags(topics, groups, info))
                lagging = {r["group"] for r in report.lag}
                report.groups.extend(asdict(g) for g in info.values() if g.group in lagging)

            _section(report, "lag", lags)

            def rates() -> None:
                for topic in topics:
                    row: dict[str, float] = {}
                    for w in RATE_WINDOWS_S:
                        count, per_s = broker.rate(topic, w)
                        row[f"count_{int(w)}s"], row[f"per_s_{int(w)}s"] = float(count), round(per_s, 3)
                    report.throughput[topic] = row
                for topic in topics:
                    tps = broker.partitions(settings.dlq(topic))
                    begins, ends = broker.beginning_offsets(tps), broker.end_offsets(tps)
                    report.dlq[settings.dlq(topic)] = sum(ends[tp] - begins[tp] for tp in tps)

            _section(report, "throughput", rates)
            _section(report, "deliveries", lambda: _deliveries(settings, broker, report, deliveries))
    else:
        report.errors["kafka"] = "Kafka does not answer; lag, throughput and deliveries unavailable"
    if report.stack[1]["ok"]:
        _section(report, "feeds", lambda: collect_feeds(settings, report, now))
    else:
        report.errors["redis"] = "Redis does not answer; feed health unavailable"
    return report


def _deliveries(settings: Settings, broker: Broker, report: Report, n: int) -> None:
    records = tail(broker, settings.kafka.topics.deliveries, max(n, 50))
    rows: list[dict[str, Any]] = []
    for r in records:
        try:
            d = decode(Delivery, r.value or b"")
        except RecordError as exc:
            rows.append({"status": "unreadable", "reason": str(exc)[:200], "partition": r.partition,
                         "offset": r.offset})
            continue
        report.delivery_counts[d.status.value] = report.delivery_counts.get(d.status.value, 0) + 1
        rows.append({"status": d.status.value, "subscription_id": d.subscription_id, "story_id": d.story_id,
                     "topic_id": d.topic_id, "channel": d.channel, "attempts": d.attempts, "reason": d.reason,
                     "at": (d.sent_at or d.recorded_at).isoformat(timespec="seconds")})
    report.deliveries = rows[-n:]


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render(report: Report) -> str:
    """The report as one screen of text."""
    lines = [f"Wirewatch status at {report.at}", "", "STACK"]
    for s in report.stack:
        row = f"  {s['name']:<6} {s['state']:<12} {s['endpoint']}  {s['version']}  {s['detail']}"
        lines.append(row.rstrip())
    lines += ["", "CONSUMER GROUPS AND LAG (end offset - committed offset)"]
    for g in report.groups:
        idle = f", {g['idle_members']} without partitions" if g["idle_members"] else ""
        lines.append(f"  {g['group']:<28} {g['state']:<12} {g['members']} member(s){idle}")
    if report.lag:
        by_group: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in report.lag:
            by_group.setdefault((r["group"], r["topic"]), []).append(r)
        for (group, topic), rows in sorted(by_group.items()):
            total = sum(r["lag"] for r in rows)
            parts = " ".join(f"p{r['partition']}={r['lag']}" for r in rows)
            lines.append(f"  {group:<28} {topic:<28} total {total:>7}   {parts}")
    else:
        lines.append("  no consumer group has committed on the pipeline topics yet")
    lines += ["", "THROUGHPUT (messages appended, by message timestamp)"]
    for topic, t in report.throughput.items():
        lines.append(f"  {topic:<32} last 1m {t.get('count_60s', 0):>6.0f}   "
                     f"{t.get('per_s_60s', 0):>8.2f}/s (1m)   {t.get('per_s_300s', 0):>8.2f}/s (5m)")
    for topic, n in report.dlq.items():
        if n:
            lines.append(f"  dead-lettered in {topic}: {n}")
    lines += ["", "FEEDS"]
    if report.feeds_total is not None:
        lines.append(f"  {report.feeds_total} feed(s) known; {len(report.feeds)} need a look")
    for f in report.feeds[:15]:
        lines.append(f"  {f.problem:<9} {f.feed_id:<18} {f.url[:60]}  {f.detail[:80]}")
    lines += ["", "RECENT DELIVERIES"]
    if report.delivery_counts:
        lines.append("  " + "  ".join(f"{k}: {v}" for k, v in sorted(report.delivery_counts.items()))
                     + "  (of the latest read)")
    for d in report.deliveries:
        if d["status"] == "unreadable":
            lines.append(f"  unreadable  p{d['partition']}@{d['offset']}: {d['reason']}")
            continue
        why = f"  ({d['reason']})" if d["reason"] else ""
        lines.append(f"  {d['at']}  {d['status']:<10} {d['subscription_id']:<20} story {d['story_id'][:16]}"
                     f"  {d['channel']}{why}")
    if not report.deliveries:
        lines.append("  none yet")
    if report.errors:
        lines += ["", "NOT AVAILABLE"]
        lines += [f"  {k}: {v}" for k, v in sorted(report.errors.items())]
    return "\n".join(lines)


def group_lag_total(report: Report, group: str) -> int:
    """Total lag of ``group`` across the report's rows."""
    return sum(int(r["lag"]) for r in report.lag if r["group"] == group)

