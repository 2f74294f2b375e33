"""Topic administration: the pipeline's topics and their DLQs exist with enough partitions."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError

from wirewatch.bus.names import client_config
from wirewatch.log import get_logger
from wirewatch.settings import Settings

log = get_logger("bus")


def ensure_topics(settings: Settings, topics: dict[str, int], *, timeout_s: float = 30.0) -> None:
    """Create each topic with its partition count if missing, and grow partitions that are too few."""
    admin = KafkaAdminClient(
        **client_config(settings),
        client_id=f"{settings.kafka.client_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, partitions, settings.kafka.replication_factor)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if new:
            try:
                admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:
                pass
            log.info("topics_created", topics=[t.name for t in new])
        grow = {}
        for meta in admin.describe_topics([n for n in topics if n in existing]):
            name = meta.get("name") or meta.get("topic")
            want = topics[name]
            if len(meta["partitions"]) < want:
                grow[name] = NewPartitions(total_count=want)
        if grow:
            admin.create_partitions(grow)
            log.info("topic_partitions_grown", topics=sorted(grow))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not set(topics) <= set(admin.list_topics()):
            time.sleep(0.2)
    finally:
        admin.close()


def ensure_default_topics(settings: Settings) -> None:
    """The three pipeline topics with ``kafka.partitions`` partitions, and their DLQs with one."""
    t = settings.kafka.topics
    wanted = {
        t.articles: settings.kafka.partitions,
        t.matches: settings.kafka.partitions,
        t.deliveries: settings.kafka.partitions,
    }
    wanted |= {settings.dlq(name): 1 for name in list(wanted)}
    ensure_topics(settings, wanted)
