"""``wirewatch eval topics`` and ``wirewatch topics test`` on the shipped Aleppo set (real model, no servers)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from classify import evaluate
from classify.topics import dump_topics, load_topic_file
from wirewatch.cli import app

ROOT = Path(__file__).resolve().parents[3]
ALEPPO = ROOT / "examples" / "aleppo"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("WIREWATCH_CLASSIFY__THREADS", "2")
    monkeypatch.setattr(evaluate, "EVAL_CACHE", tmp_path / "eval-cache")
    return CliRunner()


def _eval_json(runner: CliRunner, *extra: str) -> dict[str, object]:
    result = runner.invoke(app, ["eval", "topics", "--data", str(ALEPPO / "articles.jsonl"), "--topics",
                                 str(ALEPPO / "topics.toml"), "--shape", "feed", "--json", *extra])
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.stdout)
    return out


def test_eval_topics_rerun_reads_the_items_vectors_from_the_cache(runner: CliRunner, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first = _eval_json(runner)
    files = list((tmp_path / "eval-cache").glob("*.npy"))
    assert len(files) == 1

    def no_embedding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the items were embedded again")

    monkeypatch.setattr(evaluate, "_embed_chunks", no_embedding)
    assert _eval_json(runner) == first


def test_eval_topics_unreadable_cache_file_is_embedded_again(runner: CliRunner, tmp_path: Path) -> None:
    first = _eval_json(runner)
    (cached,) = (tmp_path / "eval-cache").glob("*.npy")
    cached.write_bytes(b"not a numpy file")
    assert _eval_json(runner) == first
    assert cached.stat().st_size > 1000  # rewritten with the vectors


def test_eval_topics_no_cache_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    _eval_json(runner, "--no-cache")
    assert not (tmp_path / "eval-cache").exists()


def test_eval_topics_json_has_per_topic_and_macro_figures(runner: CliRunner, tmp_path: Path) -> None:
    topics = tmp_path / "topics.toml"
    shutil.copy(ALEPPO / "topics.toml", topics)
    plot = tmp_path / "pr.png"
    result = runner.invoke(app, ["eval", "topics", "--data", str(ALEPPO / "articles.jsonl"), "--topics", str(topics),
                                 "--json", "--write-thresholds", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    t = out["topics"]["aleppo-ceasefire"]
    for name in ("precision", "recall", "f1", "best_threshold", "best_f1", "cosine_best_f1", "keyword_f1"):
        assert 0.0 <= t[name] <= 1.0, name
    assert t["best_f1"] >= t["f1"] and out["macro"]["f1"] == t["f1"]
    assert plot.stat().st_size > 1000
    written = load_topic_file(topics)[0]
    assert written.threshold == pytest.approx(t["best_threshold"], abs=1e-4)
    assert "# The Aleppo ceasefire" in topics.read_text()  # comments kept


def test_eval_topics_without_labels_suggests_a_background_percentile(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "unlabelled.jsonl"
    rows = [json.loads(line) for line in (ALEPPO / "articles.jsonl").read_text().splitlines()]
    data.write_text("".join(json.dumps({"id": r["id"], "title": r["title"], "text": r["text"]}) + "\n" for r in rows))
    result = runner.invoke(app, ["eval", "topics", "--data", str(data), "--topics", str(ALEPPO / "topics.toml")])
    assert result.exit_code == 0, result.output
    assert "no labels in the data" in result.stdout and "background p99" in result.stdout


def test_eval_topics_bad_data_line_exits_2_naming_the_line(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "1", "title": "ok", "labels": []}\n{oops\n')
    result = runner.invoke(app, ["eval", "topics", "--data", str(data), "--topics", str(ALEPPO / "topics.toml")])
    assert result.exit_code == 2
    assert f"{data}:2: not valid JSON" in result.stderr


def test_topics_test_prints_score_and_evidence(runner: CliRunner) -> None:
    result = runner.invoke(app, ["topics", "test", "aleppo-ceasefire", "--topics", str(ALEPPO / "topics.toml"),
                                 "Aleppo evacuation resumes\nBuses left the rebel-held east under the truce."])
    assert result.exit_code == 0, result.output
    assert "-> MATCH" in result.stdout and "keywords fired: Aleppo" in result.stdout
    assert "closest counter-example" in result.stdout


def test_topics_test_unknown_topic_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["topics", "test", "nope", "--topics", str(ALEPPO / "topics.toml"), "text"])
    assert result.exit_code == 2 and "no topic 'nope'" in result.stderr


def test_eval_topics_honours_the_topics_window_for_the_topic_and_its_baselines(runner: CliRunner,
                                                                                tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (ALEPPO / "articles.jsonl").read_text().splitlines()]
    (topic,) = load_topic_file(ALEPPO / "topics.toml")
    assert topic.since is not None
    before = {r["id"] for r in rows if r["published"] < topic.since.isoformat()}
    assert before and not any(r["labels"] for r in rows if r["id"] in before)
    windowed = _eval_json(runner, "--errors")
    unbounded_file = tmp_path / "unbounded.toml"
    unbounded_file.write_text(dump_topics([topic.model_copy(update={"since": None})]))
    result = runner.invoke(app, ["eval", "topics", "--data", str(ALEPPO / "articles.jsonl"), "--topics",
                                 str(unbounded_file), "--shape", "feed", "--json", "--errors"])
    assert result.exit_code == 0, result.output
    unbounded = json.loads(result.stdout)
    w, u = windowed["topics"]["aleppo-ceasefire"], unbounded["topics"]["aleppo-ceasefire"]  # type: ignore[index]
    assert w["outside_window"] == len(before) and u["outside_window"] == 0
    # Outside the window nothing alerts, so the false alarms there go, for the topic and for its keyword rule.
    assert not {e["item_id"] for e in windowed["errors"] if e["kind"] == "false alarm"} & before  # type: ignore[attr-defined]
    assert {e["item_id"] for e in unbounded["errors"] if e["kind"] == "false alarm"} & before
    assert w["precision"] > u["precision"] and w["recall"] == u["recall"]
    assert w["keyword_f1"] > u["keyword_f1"]


def test_eval_topics_unreadable_published_date_exits_2_naming_the_line(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "bad-date.jsonl"
    data.write_text('{"id": "1", "title": "ok", "labels": [], "published": "2016-12-07"}\n'
                    '{"id": "2", "title": "ok", "labels": [], "published": "last week"}\n')
    result = runner.invoke(app, ["eval", "topics", "--data", str(data), "--topics", str(ALEPPO / "topics.toml")])
    assert result.exit_code == 2
    assert f"{data}:2: 'published' must be an ISO 8601 date" in result.stderr


def test_topics_test_scores_the_text_and_says_when_the_window_has_closed(runner: CliRunner, tmp_path: Path) -> None:
    (topic,) = load_topic_file(ALEPPO / "topics.toml")
    closed = tmp_path / "closed.toml"
    closed.write_text(dump_topics([topic.model_copy(update={"until": topic.since.replace(year=2017)})]))
    result = runner.invoke(app, ["topics", "test", "aleppo-ceasefire", "--topics", str(closed),
                                 "Aleppo evacuation resumes\nBuses left the rebel-held east under the truce."])
    assert result.exit_code == 0, result.output
    assert "-> MATCH" in result.stdout and "outside the topic's window now (since 2016-11-15" in result.stdout


def test_labelled_items_take_their_dates_as_feeds_and_datasets_write_them(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    data = tmp_path / "dates.jsonl"
    dates = ["2016-12-07", "2016-12-07T12:00:00Z", "2016-12-07T13:00:00+01:00", "Wed, 07 Dec 2016 12:00:00 GMT",
             1481112000, ""]
    data.write_text("".join(json.dumps({"id": str(i), "title": "t", "published": d}) + "\n"
                            for i, d in enumerate(dates)))
    got = [it.published for it in evaluate.load_labelled(data)]
    noon = datetime(2016, 12, 7, 12, tzinfo=UTC)
    assert got == [datetime(2016, 12, 7, tzinfo=UTC), noon, noon, noon, noon, None]  # "" = undated
