"""The local Kafka: a single node in KRaft mode, its jars resolved by Maven into a cache folder on first use."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from wirewatch.log import describe_error, get_logger
from wirewatch.settings import Settings
from wirewatch.stack.common import ServiceStatus, StackError, cache_dir, pid_alive, port_open, stack_dir

log = get_logger("stack")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>wirewatch</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
logger.groups.name = org.apache.kafka.coordinator.group
logger.groups.level = INFO
"""


def kafka_jars(settings: Settings) -> Path:
    """The folder of Kafka's runtime jars, resolving them with Maven on first use.

    Raises:
        StackError: when Maven is missing or cannot resolve the artifacts.
    """
    libs = cache_dir(settings) / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed once to fetch Kafka's jars; install it (apt-get install maven)")
    log.info("kafka_jars_resolving", version=settings.stack.kafka_version, into=str(libs))
    libs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pom.xml").write_text(_POM.format(version=settings.stack.kafka_version))
        proc = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(
            f"could not resolve Kafka {settings.stack.kafka_version} jars with Maven: "
            f"{(proc.stdout + proc.stderr)[-2000:]}"
        )
    marker.write_text(settings.stack.kafka_version)
    return libs


def kafka_paths(settings: Settings) -> tuple[Path, Path, Path, Path]:
    """The local Kafka's folder, server.properties, pid file and log file."""
    root = stack_dir(settings, "kafka")
    return root, root / "server.properties", root / "kafka.pid", root / "kafka.log"


def _write_kafka_config(settings: Settings) -> Path:
    root, props, _, log_file = kafka_paths(settings)
    s = settings.stack
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{s.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={root / 'data'}",
                "num.partitions=6",
                "num.network.threads=2",
                "num.io.threads=4",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=6",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.retention.hours=168",
                "log.segment.bytes=134217728",
                "",
            ]
        )
    )
    (root / "log4j2.properties").write_text(_LOG4J.format(log=log_file))
    return props


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("Java 17+ is needed to run Kafka; install a JDK (apt-get install openjdk-17-jre-headless)")
    return java


def _format_kafka(settings: Settings, libs: Path, props: Path) -> None:
    root = props.parent
    if (root / "data" / "meta.properties").exists():
        return
    cluster_file = root / "cluster.id"
    if not cluster_file.exists():
        cluster_id = "-"
        while cluster_id.startswith("-"):  # the storage tool would read a leading "-" as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cluster_file.write_text(cluster_id)
    proc = subprocess.run(
        [
            _java(),
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_file.read_text().strip(),
            "-c",
            str(props),
            "--ignore-formatted",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise StackError(f"formatting Kafka storage failed: {(proc.stdout + proc.stderr)[-2000:]}")


def _kafka_answers(bootstrap: str, timeout_s: float = 5.0) -> str | None:
    """None when the broker answers a metadata request, else the reason it did not."""
    import logging

    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    # The client logs every refused connection at ERROR; while probing, a refusal is the expected answer.
    kafka_logger = logging.getLogger("kafka")
    previous = kafka_logger.level
    kafka_logger.setLevel(logging.CRITICAL)
    try:
        return _probe(KafkaAdminClient, KafkaError, bootstrap, timeout_s)
    finally:
        kafka_logger.setLevel(previous)


def _probe(admin_cls: Any, error_cls: Any, bootstrap: str, timeout_s: float) -> str | None:
    KafkaAdminClient, KafkaError = admin_cls, error_cls  # noqa: N806
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), client_id="wirewatch-stack"
        )
    except (KafkaError, OSError, ValueError) as exc:
        return describe_error(exc)
    try:
        admin.list_topics()
        return None
    except (KafkaError, OSError) as exc:
        return describe_error(exc)
    finally:
        admin.close()


def start_kafka(settings: Settings) -> None:
    """Resolve the jars, write the config, format storage once and start the broker detached."""
    libs = kafka_jars(settings)
    props = _write_kafka_config(settings)
    _format_kafka(settings, libs, props)
    root, _, pid_file, log_file = kafka_paths(settings)
    heap = settings.stack.kafka_heap
    cmd = [
        _java(),
        f"-Xmx{heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={root}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(props),
    ]
    with open(root / "kafka.out", "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=root
        )
    pid_file.write_text(str(proc.pid))
    log.info("kafka_starting", pid=proc.pid, port=settings.stack.kafka_port, log=str(log_file))


def kafka_version(settings: Settings) -> str:
    """The version of the local Kafka jars (the configured one for external clusters)."""
    libs = cache_dir(settings) / "libs"
    for jar in libs.glob("kafka_2.13-*.jar"):
        return jar.stem.removeprefix("kafka_2.13-")
    return settings.stack.kafka_version


def kafka_status(settings: Settings) -> ServiceStatus:
    """Whether Kafka answers at the configured (or local) bootstrap servers."""
    endpoint = settings.bootstrap_servers
    if not settings.local_kafka:
        reason = _kafka_answers(endpoint)
        return ServiceStatus("kafka", "external" if reason is None else "unreachable", endpoint, "", reason or "")
    _, _, pid_file, _ = kafka_paths(settings)
    pid = pid_alive(pid_file)
    if pid is None and not port_open(settings.stack.kafka_port):
        return ServiceStatus("kafka", "stopped", endpoint)
    reason = _kafka_answers(endpoint, 3.0)
    if reason is None:
        return ServiceStatus("kafka", "running", endpoint, kafka_version(settings), f"pid {pid}" if pid else "")
    return ServiceStatus("kafka", "unreachable", endpoint, kafka_version(settings), reason)
