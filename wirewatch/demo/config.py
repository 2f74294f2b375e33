"""The demo's configuration: the operator's settings plus the demo's feeds, topic and subscription.

Each demo run gets its own Redis key prefix and its own Kafka topics, so feed state, dedup keys, stories,
the delivery ledger and the consumer groups' backlog start empty, and the run shows the first minute of a
fresh installation however often it is repeated; :func:`cleanup` removes both when the run ends.
"""

from __future__ import annotations

import contextlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from wirewatch.demo.feeds import FeedServer, data_text
from wirewatch.settings import Settings, load_settings
from wirewatch.stack import free_port, port_open

TOPIC_ID = "aleppo-ceasefire"
SUBSCRIPTION_ID = "demo-desk"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoConfig:
    """The written config as data and as Settings, with what the demo tells the user about it."""

    data: dict[str, Any]
    settings: Settings
    topic_id: str
    topic_source: str
    api_port: int
    metrics_ports: dict[str, int]


def _topics_in(doc: dict[str, Any]) -> list[dict[str, Any]]:
    for candidate in (doc.get("topic"), doc.get("topics"), doc.get("classify", {}).get("topics")):
        if isinstance(candidate, list):
            return [t for t in candidate if isinstance(t, dict)]
    return [doc] if "id" in doc and "name" in doc else []


def demo_topic() -> tuple[dict[str, Any], str]:
    """The Aleppo topic: the classify stage's example definition when the repository has one, else ours."""
    examples = REPO_ROOT / "examples"
    for path in [examples / "topics.toml", *sorted((examples / "aleppo").glob("*.toml"))]:
        if not path.is_file():
            continue
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            for t in _topics_in(tomllib.loads(path.read_text(encoding="utf-8"))):
                if "aleppo" in f"{t.get('id', '')} {t.get('name', '')}".lower():
                    return t, str(path.relative_to(REPO_ROOT))
    bundled = _topics_in(tomllib.loads(data_text("topics.toml")))[0]
    return bundled, "bundled with the demo"


def _port(preferred: int | None) -> int:
    """``preferred`` when it is set and free, else a free port."""
    if preferred and not port_open(preferred):
        return preferred
    return free_port()


def build(settings: Settings, *, feeds: FeedServer, receiver_url: str, run_id: str) -> DemoConfig:
    """The demo config over ``settings`` (stack, Kafka topics and log settings are kept)."""
    data = settings.model_dump(mode="json", exclude_none=True)
    topic, source = demo_topic()
    ports = {
        "ops": _port(settings.ops.metrics_port),
        "ingest": _port(settings.ingest.metrics_port),
        "classify": _port(settings.classify.metrics_port),
        "alerts": _port(settings.alerts.metrics_port),
    }
    api_port = _port(settings.api.port)
    data["redis"]["key_prefix"] = f"{settings.redis.key_prefix}demo-{run_id}:"
    base = settings.kafka.topics
    data["kafka"]["topics"] = {"articles": f"{base.articles}.demo-{run_id}", "matches": f"{base.matches}.demo-{run_id}",
                               "deliveries": f"{base.deliveries}.demo-{run_id}"}
    data["ingest"].update(
        feeds=[{"url": url, "name": name, "interval_s": 2.0} for name, url in feeds.feed_urls().items()],
        min_interval_s=1.0, default_interval_s=2.0, max_interval_s=10.0, metrics_port=ports["ingest"],
    )
    data["classify"].update(topics=[topic], metrics_port=ports["classify"])
    data["alerts"].update(
        subscriptions=[{"id": SUBSCRIPTION_ID, "topic_id": str(topic["id"]), "mode": "instant",
                        "channel": {"type": "webhook", "target": receiver_url}}],
        metrics_port=ports["alerts"],
    )
    data["api"].update(port=api_port, host="127.0.0.1",
                       url_allowlist=sorted({*data["api"].get("url_allowlist", []), "127.0.0.1"}))
    # A demo has a minute to show itself: a worker its consumer group lost is restarted after 20 s, not 90.
    data["ops"].update(metrics_port=ports["ops"], drain_timeout_s=min(settings.ops.drain_timeout_s, 20.0),
                       restart_max_s=min(settings.ops.restart_max_s, 10.0), lag_interval_s=5.0,
                       stall_after_s=min(settings.ops.stall_after_s or 20.0, 20.0))
    return DemoConfig(data, load_settings(None, **data), str(topic["id"]), source, api_port, ports)


def write(data: dict[str, Any], path: Path) -> Path:
    """Write ``data`` as TOML at ``path`` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `wirewatch demo`; regenerated on every run.\n" + tomli_w.dumps(data),
                    encoding="utf-8")
    return path


def cleanup(settings: Settings) -> list[str]:
    """Delete the run's Kafka topics (and DLQs) and Redis keys; returns what was removed. Best effort."""
    from kafka import KafkaAdminClient

    from wirewatch import state
    from wirewatch.bus import client_config

    removed: list[str] = []
    t = settings.kafka.topics
    names = [t.articles, t.matches, t.deliveries]
    names += [settings.dlq(n) for n in names]
    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(**client_config(settings), client_id="wirewatch-demo", request_timeout_ms=10000)
        try:
            existing = set(admin.list_topics())
            doomed = [n for n in names if n in existing]
            if doomed:
                admin.delete_topics(doomed, timeout_ms=10000, raise_errors=False)
                removed.append(f"{len(doomed)} Kafka topics")
        finally:
            admin.close()
    with contextlib.suppress(Exception):
        client = state.connect(settings)
        try:
            keys = list(client.scan_iter(match=settings.redis.key_prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])
            if keys:
                removed.append(f"{len(keys)} Redis keys")
        finally:
            client.close()
    return removed
