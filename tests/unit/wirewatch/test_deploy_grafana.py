"""The Grafana dashboard and the Prometheus alerting rules load, the dashboard is what make_dashboard.py
writes, and every metric their queries name is one that wirewatch/metrics.py defines (parsed from the
module's Prometheus registry)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import wirewatch.metrics  # noqa: F401 - registers every metric

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "wirewatch.json"
_NAME = re.compile(r"\bwirewatch_[a-z0-9_]+\b")
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}


def exported_names() -> set[str]:
    """Every sample name the wirewatch_* metrics can expose."""
    out: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("wirewatch_"):
            out.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return out


def queries(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_up_to_date_with_its_generator(dashboard: dict[str, Any]) -> None:
    spec = importlib.util.spec_from_file_location("make_dashboard", DEPLOY / "grafana" / "make_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build() == dashboard


def test_every_metric_in_the_queries_is_defined_in_wirewatch_metrics(dashboard: dict[str, Any]) -> None:
    names = exported_names()
    used = {m for q in queries(dashboard) for m in _NAME.findall(q)}
    assert used, "the dashboard has no wirewatch query"
    assert sorted(used - names) == []


def test_the_checker_rejects_an_unknown_metric() -> None:
    names = exported_names()
    assert "wirewatch_bus_produced_total" in names and "wirewatch_pipeline_hop_seconds_bucket" in names
    assert "wirewatch_pipeline_hop_seconds_total" not in names
    assert "wirewatch_made_up_total" not in names


def test_the_operational_signals_are_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    text = " ".join(queries(dashboard))
    for needed in ("wirewatch_ops_group_lag_messages", "wirewatch_consumer_lag_messages",
                   "wirewatch_pipeline_hop_seconds_bucket", "wirewatch_bus_dlq_total", "wirewatch_ops_restarts_total"):
        assert needed in text
    hops = re.findall(r"sum by \(le, hop\)", text)
    assert len(hops) == 2  # p50 and p95 per hop


def test_panels_have_unique_ids_and_the_datasource_is_templated(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"
            assert t["refId"]


def test_grafana_provisioning_points_at_the_dashboard_folder() -> None:
    import yaml

    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "wirewatch.yaml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"


def test_alerting_rules_load_and_name_only_defined_metrics() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 5
    used = {m for e in exprs for m in _NAME.findall(e)}
    assert sorted(used - exported_names()) == []
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/wirewatch-rules.yml"]
    for r in (r for g in rules["groups"] for r in g["rules"]):
        assert r["alert"].startswith("Wirewatch") and r["annotations"]["summary"]
