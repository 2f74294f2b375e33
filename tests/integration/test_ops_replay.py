"""``wirewatch replay`` against the real broker: offsets for times, replay headers, no replay of replays."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from kafka import KafkaConsumer

from wirewatch import bus
from wirewatch.ops import replay as rp
from wirewatch.records import Article, encode, utcnow
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration
# The console script, as an operator runs it (``python -m wirewatch.cli`` would load the CLI module twice).
WIREWATCH = str(Path(sys.executable).with_name("wirewatch"))


def _articles(prefix: str, n: int) -> list[bus.Outgoing]:
    now = utcnow()
    out = []
    for i in range(n):
        a = Article(id=f"{prefix}{i:04d}", title=f"{prefix} {i}", published_at=now, fetched_at=now,
                    feed_url="https://f.example/rss")
        out.append(bus.Outgoing("", a.id, encode(a)))
    return out


def _produce(settings: Settings, producer: bus.Producer, items: list[bus.Outgoing]) -> None:
    topic = settings.kafka.topics.articles
    producer.send_many([bus.Outgoing(topic, o.key, o.value) for o in items])


def _read_all(settings: Settings) -> list[Any]:
    consumer = KafkaConsumer(settings.kafka.topics.articles, bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def _headers(record: Any) -> dict[str, bytes]:
    return dict(record.headers or [])


@pytest.fixture
def three_windows(settings: Settings) -> tuple[datetime, datetime, datetime]:
    """Batches A, B, C produced in three separate seconds; returns (before A, before B, before C)."""
    producer = bus.Producer(settings, client_id="test")
    try:
        t0 = datetime.now(UTC)
        _produce(settings, producer, _articles("a", 5))
        time.sleep(1.2)
        t1 = datetime.now(UTC)
        _produce(settings, producer, _articles("b", 7))
        time.sleep(1.2)
        t2 = datetime.now(UTC)
        _produce(settings, producer, _articles("c", 4))
    finally:
        producer.close()
    return t0, t1, t2


def test_replay_reproduces_exactly_the_articles_of_the_range_marked_as_replay(
    settings: Settings, three_windows: tuple[datetime, datetime, datetime]
) -> None:
    _, t1, t2 = three_windows
    result = rp.replay(settings, t1, t2, topic_id="aleppo-ceasefire")
    assert (result.found, result.produced, result.skipped_replays) == (7, 7, 0)
    records = _read_all(settings)
    assert len(records) == 16 + 7
    replays = [r for r in records if rp.REPLAY_HEADER in _headers(r)]
    originals = {(r.partition, r.offset): r for r in records if rp.REPLAY_HEADER not in _headers(r)}
    assert sorted(r.key.decode() for r in replays) == [f"b{i:04d}" for i in range(7)]
    for r in replays:
        h = _headers(r)
        assert h[rp.REPLAY_HEADER].decode() == result.replay_id
        assert h[rp.REPLAY_TOPIC_HEADER] == b"aleppo-ceasefire"
        topic, partition, offset = h[rp.REPLAY_SOURCE_HEADER].decode().rsplit(":", 2)
        source = originals[(int(partition), int(offset))]
        assert topic == settings.kafka.topics.articles
        assert (source.key, source.value) == (r.key, r.value)  # unchanged bytes, same key: same partition
        assert source.partition == r.partition


def test_replaying_again_skips_earlier_replays_and_dry_run_produces_nothing(
    settings: Settings, three_windows: tuple[datetime, datetime, datetime]
) -> None:
    t0, t1, t2 = three_windows
    first = rp.replay(settings, t1, t2)
    assert first.produced == 7
    end = datetime.now(UTC) + timedelta(seconds=1)
    dry = rp.replay(settings, t0 - timedelta(seconds=1), end, dry_run=True)
    assert dry.dry_run and dry.produced == 0 and dry.found == 16 + 7
    assert len(_read_all(settings)) == 16 + 7
    second = rp.replay(settings, t0 - timedelta(seconds=1), end)
    assert (second.produced, second.skipped_replays) == (16, 7)
    assert len(_read_all(settings)) == 16 + 7 + 16


def test_an_empty_range_replays_nothing(settings: Settings, three_windows: tuple[datetime, datetime, datetime]) -> None:
    t0, _, _ = three_windows
    result = rp.replay(settings, t0 - timedelta(hours=2), t0 - timedelta(hours=1))
    assert (result.found, result.produced) == (0, 0)


def test_parse_time_accepts_iso_durations_and_now() -> None:
    now = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    assert rp.parse_time("now", now) == now
    assert rp.parse_time("30m", now) == now - timedelta(minutes=30)
    assert rp.parse_time("-2h", now) == now - timedelta(hours=2)
    assert rp.parse_time("1d", now) == now - timedelta(days=1)
    assert rp.parse_time("2026-11-28T06:00:00Z", now) == datetime(2026, 11, 28, 6, tzinfo=UTC)
    assert rp.parse_time("2026-11-28T08:00:00+02:00", now) == datetime(2026, 11, 28, 6, tzinfo=UTC)
    assert rp.parse_time("2026-11-28T06:00:00", now) == datetime(2026, 11, 28, 6, tzinfo=UTC)
    with pytest.raises(rp.ReplayError, match="cannot read time 'yesterday-ish'"):
        rp.parse_time("yesterday-ish", now)


def _config(settings: Settings, tmp_path: Path) -> Path:
    path = tmp_path / "wirewatch.toml"
    path.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    return path


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIREWATCH, "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_replays_a_range_and_reports_it(settings: Settings, three_windows: tuple[datetime, datetime, datetime],
                                            tmp_path: Path) -> None:
    _, t1, t2 = three_windows
    done = _cli(_config(settings, tmp_path), "replay", "--from", t1.isoformat(), "--to", t2.isoformat())
    assert done.returncode == 0, done.stderr
    assert "replayed 7 article(s)" in done.stdout


def test_cli_bad_range_gets_exit_2_with_the_reason_and_replays_nothing(
    settings: Settings, three_windows: tuple[datetime, datetime, datetime], tmp_path: Path
) -> None:
    _, t1, t2 = three_windows
    cfg = _config(settings, tmp_path)
    backwards = _cli(cfg, "replay", "--from", t2.isoformat(), "--to", t1.isoformat())
    assert backwards.returncode == 2
    assert "must be after --from" in backwards.stderr
    garbage = _cli(cfg, "replay", "--from", "last tuesday")
    assert garbage.returncode == 2
    assert "cannot read time 'last tuesday'" in garbage.stderr
    assert len(_read_all(settings)) == 16
