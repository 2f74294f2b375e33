"""deploy/k8s: every manifest validates against the Kubernetes JSON schemas that kubernetes-validate
bundles (offline, strict: unknown fields fail), and the deployment shape the scaling guide promises holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
K8S_VERSION = "1.33.0"


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path.name, d) for d in yaml.safe_load_all(path.read_text()) if d)
    return out


DOCS = _docs()


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{n}:{d['kind']}:{d['metadata']['name']}" for n, d in DOCS])
def test_manifest_validates_against_its_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_misspelled_field_is_rejected_so_the_validation_is_real() -> None:
    doc = next(d for _, d in DOCS if d["kind"] == "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(doc))
    bad["spec"]["replica"] = bad["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == "Deployment"}


def test_classify_and_alerts_have_replicas_and_disruption_budgets() -> None:
    deps = _deployments()
    assert deps["wirewatch-classify"]["spec"]["replicas"] >= 2
    assert deps["wirewatch-alerts"]["spec"]["replicas"] >= 2
    pdbs = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "PodDisruptionBudget"}
    assert {"wirewatch-classify", "wirewatch-alerts"} <= pdbs


def test_every_container_runs_non_root_with_probes_and_a_drain_grace_period() -> None:
    for name, dep in _deployments().items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["terminationGracePeriodSeconds"] >= 30, name
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert "livenessProbe" in c and "readinessProbe" in c, name
            assert c["resources"]["limits"]["memory"], name
            refs = [e.get("configMapRef", {}).get("name") for e in c["envFrom"]]
            assert "wirewatch-env" in refs, name


def test_worker_probes_and_annotations_use_the_metrics_ports_in_settings() -> None:
    from wirewatch.settings import load_settings

    s = load_settings(None)
    ports = {"ingest": s.ingest.metrics_port, "classify": s.classify.metrics_port,
             "alerts": s.alerts.metrics_port, "exporter": s.ops.metrics_port}
    deps = _deployments()
    for role, port in ports.items():
        tpl = deps[f"wirewatch-{role}"]["spec"]["template"]
        container = tpl["spec"]["containers"][0]
        assert container["args"] == [role]
        assert container["ports"][0]["containerPort"] == port
        assert tpl["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_the_config_map_holds_a_config_that_loads(tmp_path: Path) -> None:
    from wirewatch.settings import load_settings

    cm = next(d for _, d in DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "wirewatch-config")
    path = tmp_path / "wirewatch.toml"
    path.write_text(cm["data"]["wirewatch.toml"])
    s = load_settings(path)
    assert s.kafka.partitions >= max(d["spec"]["replicas"] for d in _deployments().values())
