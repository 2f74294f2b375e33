"""deploy/compose.yaml, deploy/Dockerfile and deploy/prometheus.yml: structure checked without Docker.

Docker is not available on the test machine, so these tests check what can be checked statically: the
YAML loads, every role is a service with a healthcheck, Kafka runs in KRaft mode, Redis with AOF, and
the image is multi-stage, CPU-only torch, non-root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from wirewatch.ops.roles import ROLES

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_every_role_and_the_infrastructure_is_a_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(ROLES) | {"kafka", "redis", "prometheus", "grafana", "exporter", "init"} <= set(services)
    for role in ROLES:
        assert services[role]["command"] == [role]
        assert services[role]["image"] == "wirewatch:latest"
        assert services[role]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name == "init":
            assert svc["healthcheck"] == {"disable": True}
            assert svc["restart"] == "no"
            continue
        if name in ROLES or name == "exporter":
            # The image's HEALTHCHECK probes WIREWATCH_HEALTH_PORT; each worker names its metrics port.
            env = svc["environment"]
            assert env["WIREWATCH_HEALTH_PORT"].isdigit(), name
            continue
        test = svc["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_worker_health_ports_match_the_metrics_ports_in_settings(compose: dict[str, Any]) -> None:
    from wirewatch.settings import load_settings

    s = load_settings(None)
    want = {"ingest": s.ingest.metrics_port, "classify": s.classify.metrics_port,
            "alerts": s.alerts.metrics_port, "api": s.api.port, "exporter": s.ops.metrics_port}
    for name, port in want.items():
        assert int(compose["services"][name]["environment"]["WIREWATCH_HEALTH_PORT"]) == port, name


def test_workers_wait_for_healthy_kafka_and_redis_and_the_topic_job(compose: dict[str, Any]) -> None:
    for role in ROLES:
        deps = compose["services"][role]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["init"]["condition"] == "service_completed_successfully"
        env = compose["services"][role]["environment"]
        assert env["WIREWATCH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["WIREWATCH_REDIS__URL"].startswith("redis://redis:6379")
        assert env["WIREWATCH_OPS__METRICS_ADDR"] == "0.0.0.0"


def test_kafka_runs_in_kraft_mode_and_redis_with_aof(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert not any("ZOOKEEPER" in k for k in env)
    redis_cmd = compose["services"]["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in compose["services"]["redis"]["volumes"]


def test_classify_and_alerts_run_several_replicas(compose: dict[str, Any]) -> None:
    assert compose["services"]["classify"]["deploy"]["replicas"] >= 2
    assert compose["services"]["alerts"]["deploy"]["replicas"] >= 2


def test_graceful_stop_period_covers_the_drain_timeout(compose: dict[str, Any]) -> None:
    cfg = (DEPLOY / "wirewatch.toml").read_text()
    from wirewatch.settings import load_settings

    s = load_settings(DEPLOY / "wirewatch.toml")
    assert "drain_timeout_s" in cfg
    grace = compose["services"]["classify"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > s.ops.drain_timeout_s


def test_dockerfile_is_multi_stage_non_root_with_cpu_torch() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2
    assert "COPY --from=build" in text
    assert "download.pytorch.org/whl/cpu" in text
    setup = (DEPLOY.parent / "scripts" / "setup.sh").read_text()
    pinned = next(line.split("=", 1)[1] for line in setup.splitlines() if line.startswith("TORCH_VERSION="))
    assert f"ARG TORCH_VERSION={pinned}" in text  # the image runs the torch that CI tested
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["wirewatch"]' in text
    assert "HF_HUB_OFFLINE=1" in text


def test_prometheus_scrapes_every_worker_on_its_metrics_port(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    ports = {"ingest": 9101, "classify": 9102, "alerts": 9103}
    for role, port in ports.items():
        sd = jobs[f"wirewatch-{role}"]["dns_sd_configs"][0]
        assert sd["names"] == [role] and sd["port"] == port
    assert jobs["wirewatch-exporter"]["static_configs"][0]["targets"] == ["exporter:9100"]
    assert jobs["wirewatch-api"]["static_configs"][0]["targets"] == ["api:8080"]
    mounted = compose["services"]["prometheus"]["volumes"][0]
    assert mounted.startswith("./prometheus.yml:")
