"""Write deploy/grafana/dashboards/wirewatch.json: the Wirewatch Grafana dashboard.

Run ``python deploy/grafana/make_dashboard.py`` after changing a panel. Every query names metrics defined
in wirewatch/metrics.py (tests/unit/wirewatch/test_deploy_grafana.py checks it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "wirewatch.json"
R = "$__rate_interval"


def q(expr: str, legend: str) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    return {"expr": expr, "legendFormat": legend, "datasource": {"type": "prometheus", "uid": "${datasource}"}}


def p95(metric: str, by: str = "") -> str:
    """The 95th percentile of a histogram over the rate interval, grouped by ``by``."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.95, sum by ({group}) (rate({metric}_bucket[{R}])))"


ROWS: list[tuple[str, list[tuple[str, str, list[dict[str, Any]]]]]] = [
    ("Pipeline", [
        ("Messages produced per second, by topic", "ops", [
            q(f"sum by (topic) (rate(wirewatch_bus_produced_total[{R}]))", "{{topic}}")]),
        ("Messages consumed per second, by group", "ops", [
            q(f"sum by (group) (rate(wirewatch_bus_consumed_total[{R}]))", "{{group}}")]),
        ("Consumer lag, by group and topic (from the broker)", "short", [
            q("sum by (group, topic) (wirewatch_ops_group_lag_messages)", "{{group}} / {{topic}}")]),
        ("Consumer lag per partition (from the consumers)", "short", [
            q("max by (group, partition) (wirewatch_consumer_lag_messages)", "{{group}} p{{partition}}")]),
        ("Hop latency p50 / p95 (published > fetched > classified > delivered)", "s", [
            q(f"histogram_quantile(0.5, sum by (le, hop) (rate(wirewatch_pipeline_hop_seconds_bucket[{R}])))",
              "p50 {{hop}}"),
            q(p95("wirewatch_pipeline_hop_seconds", "hop"), "p95 {{hop}}")]),
        ("Dead-lettered per second, by group and reason", "ops", [
            q(f"sum by (group, reason) (rate(wirewatch_bus_dlq_total[{R}]))", "{{group}} {{reason}}")]),
        ("Batch time p95, by group", "s", [q(p95("wirewatch_bus_batch_seconds", "group"), "{{group}}")]),
        ("Batch retries per second (transient errors)", "ops", [
            q(f"sum by (group) (rate(wirewatch_bus_batch_retries_total[{R}]))", "{{group}}")]),
        ("Messages appended per second, by topic (from the broker)", "ops", [
            q(f"sum by (topic) (deriv(wirewatch_ops_topic_end_offset[{R}]))", "{{topic}}")]),
        ("Consumer group lag per partition (from the broker)", "short", [
            q("max by (group, partition) (wirewatch_ops_group_lag_messages)", "{{group}} p{{partition}}")]),
        ("Worker restarts and stalls (supervisor), last hour", "short", [
            q("sum by (role) (increase(wirewatch_ops_restarts_total[1h]))", "restarts {{role}}"),
            q("sum by (role) (increase(wirewatch_ops_stalls_total[1h]))", "stalled {{role}}")]),
        ("Worker exits by kind, last hour", "short", [
            q("sum by (role, kind) (increase(wirewatch_ops_exits_total[1h]))", "{{role}} {{kind}}")]),
    ]),
    ("Ingest", [
        ("Fetches per second, by outcome", "ops", [
            q(f"sum by (outcome) (rate(wirewatch_ingest_fetches_total[{R}]))", "{{outcome}}")]),
        ("Entries per second, by fate", "ops", [
            q(f"sum by (kind) (rate(wirewatch_ingest_items_total[{R}]))", "{{kind}}")]),
        ("Fetch time p95 / feed processing p95", "s", [
            q(p95("wirewatch_ingest_fetch_seconds"), "fetch"),
            q(p95("wirewatch_ingest_process_seconds"), "fetch to Kafka ack")]),
        ("Feeds by state; due, overdue, quiet", "short", [
            q("sum by (state) (wirewatch_ingest_feeds)", "{{state}}"),
            q("sum(wirewatch_ingest_feeds_due)", "due"),
            q("sum(wirewatch_ingest_feeds_overdue)", "overdue"),
            q("sum(wirewatch_ingest_feeds_quiet)", "quiet")]),
        ("Parse problems and disabled feeds per second", "ops", [
            q(f"sum by (error) (rate(wirewatch_ingest_parse_problems_total[{R}]))", "parse {{error}}"),
            q(f"sum by (reason) (rate(wirewatch_ingest_feeds_disabled_total[{R}]))", "disabled {{reason}}")]),
    ]),
    ("Classify", [
        ("Articles classified and matches per second", "ops", [
            q(f"sum(rate(wirewatch_classify_articles_total[{R}]))", "articles"),
            q(f"sum by (topic) (rate(wirewatch_classify_matches_total[{R}]))", "matches {{topic}}")]),
        ("Batch and embedding time p95", "s", [
            q(p95("wirewatch_classify_batch_seconds"), "batch"),
            q(p95("wirewatch_classify_embed_seconds"), "embed")]),
        ("Embedding cache hit ratio", "percentunit", [
            q(f'sum(rate(wirewatch_classify_embed_cache_total{{result="hit"}}[{R}])) / '
              f"sum(rate(wirewatch_classify_embed_cache_total[{R}]))", "hit ratio")]),
        ("Topics in force and reloads", "short", [
            q("max(wirewatch_classify_topics)", "topics"),
            q("sum by (outcome) (increase(wirewatch_classify_topic_reloads_total[1h]))", "reloads {{outcome}}")]),
    ]),
    ("Alerts", [
        ("Decisions per second, by action and reason", "ops", [
            q(f"sum by (action, reason) (rate(wirewatch_alerts_decisions_total[{R}]))", "{{action}} {{reason}}")]),
        ("Send attempts per second, by channel and outcome", "ops", [
            q(f"sum by (channel, outcome) (rate(wirewatch_alerts_send_attempts_total[{R}]))",
              "{{channel}} {{outcome}}")]),
        ("Send time p95 and match-to-acknowledged p95", "s", [
            q(p95("wirewatch_alerts_send_seconds", "channel"), "send {{channel}}"),
            q(p95("wirewatch_alerts_latency_seconds"), "match to ack")]),
        ("Stories per second, by result; outbox pending", "short", [
            q(f"sum by (result) (rate(wirewatch_alerts_stories_total[{R}]))", "stories {{result}}"),
            q("sum(wirewatch_alerts_outbox_pending)", "outbox pending"),
            q(f"sum by (trigger) (rate(wirewatch_alerts_digests_total[{R}]))", "digests {{trigger}}")]),
    ]),
    ("API", [
        ("Requests per second, by status", "reqps", [
            q(f"sum by (status) (rate(wirewatch_api_requests_total[{R}]))", "{{status}}")]),
        ("Request time p95, by route", "s", [q(p95("wirewatch_api_request_seconds", "route"), "{{route}}")]),
        ("Auth failures and dropped stream events per second", "ops", [
            q(f"sum by (status) (rate(wirewatch_api_auth_failures_total[{R}]))", "auth {{status}}"),
            q(f"sum(rate(wirewatch_api_stream_dropped_total[{R}]))", "stream dropped")]),
        ("Stream clients, feedback", "short", [
            q("sum(wirewatch_api_stream_clients)", "stream clients"),
            q(f"sum by (verdict) (rate(wirewatch_api_feedback_total[{R}]))", "feedback {{verdict}}")]),
    ]),
]


def build() -> dict[str, Any]:
    """The dashboard document."""
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for title, row in ROWS:
        panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (ptitle, unit, targets) in enumerate(row):
            panels.append({
                "type": "timeseries", "title": ptitle, "id": pid,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [t | {"refId": chr(ord("A") + j)} for j, t in enumerate(targets)],
            })
            pid += 1
        y += 8 * ((len(row) + 1) // 2)
    return {
        "uid": "wirewatch", "title": "Wirewatch", "tags": ["wirewatch"], "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Data source", "current": {"text": "Prometheus", "value": "prometheus"}}]},
        "panels": panels,
    }


def main() -> None:
    """Write the dashboard JSON."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
