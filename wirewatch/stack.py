"""The local stack: a single-node Apache Kafka in KRaft mode and a redis-server, both on 127.0.0.1.

Kafka's jars are resolved from Maven Central by ``mvn dependency:copy-dependencies`` on a small pom into a
cache folder on first use; its storage is formatted once under ``<data_dir>/stack/kafka``. redis-server runs
with AOF persistence under ``<data_dir>/stack/redis``. Both are started detached (their own session), so they
outlive the CLI call; pid files let ``down`` stop exactly what ``up`` started. When external bootstrap servers
or a Redis URL are configured, nothing is started: ``up`` and ``status`` only check them.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wirewatch.log import describe_error, get_logger
from wirewatch.settings import Settings

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
"""


class StackError(RuntimeError):
    """The local stack could not be prepared or started; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    """One service's state.

    ``running`` (answers), ``stopped`` (not started), ``unreachable`` (started or configured, but not
    answering), or ``external`` (configured elsewhere and answering).
    """

    name: str
    state: str
    endpoint: str
    version: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the service answers."""
        return self.state in ("running", "external")


def _cache_dir(settings: Settings) -> Path:
    base = settings.stack.cache_dir or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "wirewatch"
    return Path(base).expanduser() / f"kafka-{settings.stack.kafka_version}"


def _stack_dir(settings: Settings, name: str) -> Path:
    path = settings.data_dir.expanduser() / "stack" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    """An ephemeral port that was free a moment ago (for tests and the demo)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie child (we started it in this process and it died) counts as dead.
    with contextlib.suppress(FileNotFoundError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return None
    return pid


def kafka_jars(settings: Settings) -> Path:
    """The folder of Kafka's runtime jars, resolving them with Maven on first use.

    Raises:
        StackError: when Maven is missing or cannot resolve the artifacts.
    """
    libs = _cache_dir(settings) / "libs"
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


def _kafka_paths(settings: Settings) -> tuple[Path, Path, Path, Path]:
    root = _stack_dir(settings, "kafka")
    return root, root / "server.properties", root / "kafka.pid", root / "kafka.log"


def _write_kafka_config(settings: Settings) -> Path:
    root, props, _, log_file = _kafka_paths(settings)
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


def _start_kafka(settings: Settings) -> None:
    libs = kafka_jars(settings)
    props = _write_kafka_config(settings)
    _format_kafka(settings, libs, props)
    root, _, pid_file, log_file = _kafka_paths(settings)
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


def _redis_paths(settings: Settings) -> tuple[Path, Path, Path]:
    root = _stack_dir(settings, "redis")
    return root, root / "redis.conf", root / "redis.pid"


def redis_server_binary() -> str:
    """Path of redis-server.

    Raises:
        StackError: when it is not installed.
    """
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise StackError("redis-server is not installed; install it (apt-get install -y redis-server)")
    return found


def _start_redis(settings: Settings) -> None:
    root, conf, pid_file = _redis_paths(settings)
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {settings.stack.redis_port}",
                "protected-mode yes",
                "daemonize no",
                f"dir {root}",
                "appendonly yes",
                "appendfsync everysec",
                "save ''",
                f"logfile {root / 'redis.log'}",
                "maxmemory-policy noeviction",
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        [redis_server_binary(), str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=root,
    )
    pid_file.write_text(str(proc.pid))
    log.info("redis_starting", pid=proc.pid, port=settings.stack.redis_port)


def _redis_version(url: str) -> tuple[str | None, str]:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        info = client.info("server")
        client.close()
        return str(info.get("redis_version", "?")), ""
    except (redis.RedisError, OSError) as exc:
        return None, describe_error(exc)


def kafka_version(settings: Settings) -> str:
    """The version of the local Kafka jars (the configured one for external clusters)."""
    libs = _cache_dir(settings) / "libs"
    for jar in libs.glob("kafka_2.13-*.jar"):
        return jar.stem.removeprefix("kafka_2.13-")
    return settings.stack.kafka_version


def kafka_status(settings: Settings) -> ServiceStatus:
    """Whether Kafka answers at the configured (or local) bootstrap servers."""
    endpoint = settings.bootstrap_servers
    if not settings.local_kafka:
        reason = _kafka_answers(endpoint)
        return ServiceStatus("kafka", "external" if reason is None else "unreachable", endpoint, "", reason or "")
    _, _, pid_file, _ = _kafka_paths(settings)
    pid = _pid_alive(pid_file)
    if pid is None and not port_open(settings.stack.kafka_port):
        return ServiceStatus("kafka", "stopped", endpoint)
    reason = _kafka_answers(endpoint, 3.0)
    if reason is None:
        return ServiceStatus("kafka", "running", endpoint, kafka_version(settings), f"pid {pid}" if pid else "")
    return ServiceStatus("kafka", "unreachable", endpoint, kafka_version(settings), reason)


def redis_status(settings: Settings) -> ServiceStatus:
    """Whether Redis answers at the configured (or local) URL."""
    url = settings.redis_url
    version, reason = _redis_version(url)
    if not settings.local_redis:
        return ServiceStatus("redis", "external" if version else "unreachable", url, version or "", reason)
    _, _, pid_file = _redis_paths(settings)
    pid = _pid_alive(pid_file)
    if version:
        return ServiceStatus("redis", "running", url, version, f"pid {pid}" if pid else "")
    if pid is None:
        return ServiceStatus("redis", "stopped", url)
    return ServiceStatus("redis", "unreachable", url, "", reason)


def status(settings: Settings) -> list[ServiceStatus]:
    """Kafka's and Redis's state."""
    return [kafka_status(settings), redis_status(settings)]


def _wait(check: Callable[[], ServiceStatus], what: str, timeout_s: float, log_hint: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = check()
        if st.ok:
            return
        time.sleep(0.25)
    tail = ""
    if log_hint and log_hint.exists():
        tail = "\n" + "\n".join(log_hint.read_text(errors="replace").splitlines()[-15:])
    raise StackError(f"{what} did not answer within {timeout_s:.0f}s{tail}")


def up(settings: Settings) -> list[ServiceStatus]:
    """Start whatever local service is not running, and wait until each answers. Idempotent.

    External services are only checked.

    Raises:
        StackError: when a service cannot be started or does not answer in ``stack.start_timeout_s``.
    """
    if settings.local_redis and not redis_status(settings).ok:
        _start_redis(settings)
    if settings.local_kafka and kafka_status(settings).state == "stopped":
        _start_kafka(settings)
    timeout = settings.stack.start_timeout_s
    _wait(lambda: redis_status(settings), "redis", timeout, _redis_paths(settings)[0] / "redis.log")
    _wait(lambda: kafka_status(settings), "kafka", timeout, _kafka_paths(settings)[0] / "kafka.out")
    return status(settings)


def _stop_pid(pid_file: Path, name: str, timeout_s: float = 30.0) -> bool:
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid_file):
        time.sleep(0.2)
    if _pid_alive(pid_file):
        log.warning("stack_kill", service=name, pid=pid, after_s=timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    return True


def down(settings: Settings) -> list[str]:
    """Stop the local services this data dir started (never external ones). Returns what was stopped."""
    stopped = []
    if settings.local_kafka and _stop_pid(_kafka_paths(settings)[2], "kafka"):
        stopped.append("kafka")
    if settings.local_redis and _stop_pid(_redis_paths(settings)[2], "redis"):
        stopped.append("redis")
    return stopped
