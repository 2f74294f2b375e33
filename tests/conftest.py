"""Shared fixtures: one real Kafka (KRaft) and redis-server per test session, on free ports, in a temp dir.

Set ``WIREWATCH_TEST_BOOTSTRAP`` / ``WIREWATCH_TEST_REDIS_URL`` to run against existing servers instead.
Each test gets its own topic names and Redis key prefix from :func:`settings`, so tests never see each
other's data and two runs never collide.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from wirewatch import bus, stack  # noqa: E402
from wirewatch.log import configure  # noqa: E402
from wirewatch.settings import Settings, load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
_VERSIONS: dict[str, str] = {}

configure("warning", "console")


@pytest.fixture(scope="session")
def stack_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start (or point at) Kafka and Redis once for the session; returns Settings overrides."""
    ext_kafka = os.environ.get("WIREWATCH_TEST_BOOTSTRAP")
    ext_redis = os.environ.get("WIREWATCH_TEST_REDIS_URL")
    data_dir = tmp_path_factory.mktemp("stack")
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "stack": {
            "kafka_port": stack.free_port(),
            "controller_port": stack.free_port(),
            "redis_port": stack.free_port(),
            "kafka_heap": "512m",
        },
        "log": {"level": "warning", "format": "console"},
    }
    if ext_kafka:
        base["kafka"] = {"bootstrap_servers": ext_kafka}
    if ext_redis:
        base["redis"] = {"url": ext_redis}
    s = load_settings(None, **base)
    started = time.monotonic()
    rows = stack.up(s)
    for row in rows:
        _VERSIONS[row.name] = (
            f"{row.version or '?'} at {row.endpoint} ({row.state}, up in {time.monotonic() - started:.1f}s)"
        )
    try:
        yield base
    finally:
        stack.down(s)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def make_settings(stack_base: dict[str, Any]) -> Callable[..., Settings]:
    """Build Settings on the session stack with a per-test namespace; keyword overrides merge in."""
    ns = uuid.uuid4().hex[:8]
    unique = {
        "redis": {"key_prefix": f"t{ns}:"},
        "kafka": {
            "topics": {"articles": f"t{ns}.articles", "matches": f"t{ns}.matches", "deliveries": f"t{ns}.deliveries"},
            "partitions": 3,
            # Its own consumer groups too: a worker another test killed stays a member of a shared group until
            # its session times out, and every join there would wait for it.
            "group_prefix": f"t{ns}",
        },
    }

    def build(**overrides: Any) -> Settings:
        return load_settings(None, **_merge(_merge(stack_base, unique), overrides))

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings on the session stack, with this test's own topics (created) and Redis prefix."""
    s = make_settings()
    bus.ensure_default_topics(s)
    return s


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _VERSIONS:
        terminalreporter.section("services talked to")
        for name, desc in sorted(_VERSIONS.items()):
            terminalreporter.write_line(f"{name}: {desc}")
