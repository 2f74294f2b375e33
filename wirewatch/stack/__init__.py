"""The local stack: a single-node Apache Kafka in KRaft mode and a redis-server, both on 127.0.0.1.

Kafka's jars are resolved from Maven Central by ``mvn dependency:copy-dependencies`` on a small pom into a
cache folder on first use; its storage is formatted once under ``<data_dir>/stack/kafka``. redis-server runs
with AOF persistence under ``<data_dir>/stack/redis``. Both are started detached (their own session), so they
outlive the CLI call; pid files let ``down`` stop exactly what ``up`` started. When external bootstrap servers
or a Redis URL are configured, nothing is started: ``up`` and ``status`` only check them.

Kafka's half is :mod:`.kafka_server`, Redis's :mod:`.redis_server`; what both share (status, folders, ports,
pid files) is :mod:`.common`.
"""

from __future__ import annotations

from wirewatch.settings import Settings
from wirewatch.stack.common import ServiceStatus, StackError, free_port, port_open, stop_pid, wait_until
from wirewatch.stack.kafka_server import kafka_jars, kafka_paths, kafka_status, kafka_version, start_kafka
from wirewatch.stack.redis_server import redis_paths, redis_server_binary, redis_status, start_redis

__all__ = [
    "ServiceStatus",
    "StackError",
    "down",
    "free_port",
    "kafka_jars",
    "kafka_status",
    "kafka_version",
    "port_open",
    "redis_server_binary",
    "redis_status",
    "status",
    "up",
]


def status(settings: Settings) -> list[ServiceStatus]:
    """Kafka's and Redis's state."""
    return [kafka_status(settings), redis_status(settings)]


def up(settings: Settings) -> list[ServiceStatus]:
    """Start whatever local service is not running, and wait until each answers. Idempotent.

    External services are only checked.

    Raises:
        StackError: when a service cannot be started or does not answer in ``stack.start_timeout_s``.
    """
    if settings.local_redis and not redis_status(settings).ok:
        start_redis(settings)
    if settings.local_kafka and kafka_status(settings).state == "stopped":
        start_kafka(settings)
    timeout = settings.stack.start_timeout_s
    wait_until(lambda: redis_status(settings), "redis", timeout, redis_paths(settings)[0] / "redis.log")
    wait_until(lambda: kafka_status(settings), "kafka", timeout, kafka_paths(settings)[0] / "kafka.out")
    return status(settings)


def down(settings: Settings) -> list[str]:
    """Stop the local services this data dir started (never external ones). Returns what was stopped."""
    stopped = []
    if settings.local_kafka and stop_pid(kafka_paths(settings)[2], "kafka"):
        stopped.append("kafka")
    if settings.local_redis and stop_pid(redis_paths(settings)[2], "redis"):
        stopped.append("redis")
    return stopped
