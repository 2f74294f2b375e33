"""The local redis-server, with AOF persistence under ``<data_dir>/stack/redis``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from wirewatch.log import describe_error, get_logger
from wirewatch.settings import Settings
from wirewatch.stack.common import ServiceStatus, StackError, pid_alive, stack_dir

log = get_logger("stack")


def redis_paths(settings: Settings) -> tuple[Path, Path, Path]:
    """The local redis-server's folder, config file and pid file."""
    root = stack_dir(settings, "redis")
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


def start_redis(settings: Settings) -> None:
    """Write the config and start redis-server detached."""
    root, conf, pid_file = redis_paths(settings)
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


def redis_status(settings: Settings) -> ServiceStatus:
    """Whether Redis answers at the configured (or local) URL."""
    url = settings.redis_url
    version, reason = _redis_version(url)
    if not settings.local_redis:
        return ServiceStatus("redis", "external" if version else "unreachable", url, version or "", reason)
    _, _, pid_file = redis_paths(settings)
    pid = pid_alive(pid_file)
    if version:
        return ServiceStatus("redis", "running", url, version, f"pid {pid}" if pid else "")
    if pid is None:
        return ServiceStatus("redis", "stopped", url)
    return ServiceStatus("redis", "unreachable", url, "", reason)
