"""``wirewatch topics preview / feedback / put / list`` against the real redis-server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from classify.classifier import Classifier
from classify.embedder import load_embedder
from classify.recent import RecentStore
from classify.topics import TopicStore
from wirewatch import state
from wirewatch.cli import app
from wirewatch.records import Article
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOPICS = ROOT / "examples" / "aleppo" / "topics.toml"


@pytest.fixture
def cli(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, Settings]:
    s: Settings = make_settings()
    monkeypatch.setenv("WIREWATCH_REDIS__URL", s.redis_url)
    monkeypatch.setenv("WIREWATCH_REDIS__KEY_PREFIX", s.redis.key_prefix)
    monkeypatch.setenv("WIREWATCH_CLASSIFY__THREADS", "2")
    monkeypatch.setenv("WIREWATCH_CLASSIFY__BACKEND", "onnx-int8")
    return CliRunner(), s


def test_preview_feedback_put_and_list(cli: tuple[CliRunner, Settings]) -> None:
    runner, s = cli
    now = datetime.now(UTC)
    arts = [
        Article(id="a1", title="Aleppo evacuation resumes under the ceasefire deal",
                published_at=now - timedelta(hours=2), fetched_at=now, feed_url="f", source="wire"),
        Article(id="a2", title="Buses leave east Aleppo as the truce holds", published_at=now - timedelta(hours=26),
                fetched_at=now, feed_url="f", source="wire"),
        Article(id="a3", title="Central bank holds interest rates", published_at=now - timedelta(hours=3),
                fetched_at=now, feed_url="f", source="wire"),
    ]
    c = Classifier(load_embedder(backend="onnx-int8", threads=2))
    RecentStore(state.connect(s), s).add(arts, c.embed([c.text_of(a) for a in arts]))

    r = runner.invoke(app, ["topics", "preview", str(TOPICS), "--hours", "48"])
    assert r.exit_code == 0, r.output
    assert "3 articles from the last 48 h" in r.stdout and "2 would match" in r.stdout
    assert "Aleppo evacuation resumes" in r.stdout and "Central bank" not in r.stdout.split("near misses")[0]
    assert TopicStore(state.connect(s), s).get("aleppo-ceasefire") is None  # preview saves nothing

    r = runner.invoke(app, ["topics", "put", str(TOPICS)])
    assert r.exit_code == 0 and "aleppo-ceasefire: version 1" in r.stdout
    r = runner.invoke(app, ["topics", "feedback", "aleppo-ceasefire", "--not-relevant", "--article", "a3"])
    assert r.exit_code == 0, r.output
    assert "added to counter-examples; now version 2" in r.stdout
    topic = TopicStore(state.connect(s), s).get("aleppo-ceasefire")
    assert topic is not None and topic.counter_examples[-1] == "Central bank holds interest rates"
    r = runner.invoke(app, ["topics", "put", str(TOPICS)])
    assert "aleppo-ceasefire: version 3" in r.stdout  # saving again is a new version, never a step back
    r = runner.invoke(app, ["topics", "list"])
    assert "aleppo-ceasefire" in r.stdout and "v3" in r.stdout and "since 2016-11-15 00:00" in r.stdout


def test_feedback_errors_exit_2_and_change_nothing(cli: tuple[CliRunner, Settings]) -> None:
    runner, s = cli
    r = runner.invoke(app, ["topics", "feedback", "nope", "--relevant", "--text", "something"])
    assert r.exit_code == 2 and "no topic 'nope'" in r.stderr
    r = runner.invoke(app, ["topics", "feedback", "nope", "--relevant"])
    assert r.exit_code == 2 and "exactly one of --text or --article" in r.stderr
    r = runner.invoke(app, ["topics", "feedback", "nope", "--relevant", "--article", "missing"])
    assert r.exit_code == 2 and "not in the recent store" in r.stderr
    assert TopicStore(state.connect(s), s).all() == []
