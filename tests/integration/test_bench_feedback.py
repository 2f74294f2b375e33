"""``bench.feedback``'s core on a tiny labelled stream, against the real redis-server.

Judgements must go the API's way (a new topic version in the registry) and reach the classifier through the
registry watcher; the report must have a row per checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from dev_data import DEV, needs_dev

from bench.feedback.core import build_classifier, run_set
from bench.feedback.data import load_stream
from bench.feedback.report import summarize, tables
from classify.evaluate import evaluate, load_labelled
from classify.topics import load_topic_file
from wirewatch import state
from wirewatch.records import Topic
from wirewatch.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

ITEMS = [
    ("Dock workers walk out at the port of Felixstowe", "Container traffic stopped as the strike over pay began.",
     ["port-strike"]),
    ("Central bank holds interest rates", "Policy makers voted to keep borrowing costs unchanged.", []),
    ("Striking dockers extend walkout by a week", "The union said talks with the port operator had failed.",
     ["port-strike"]),
    ("Champions League: late goal sends holders through", "A stoppage-time header settled the tie.", []),
    ("Ships queue off the coast as port strike bites", "Retailers warned of empty shelves before Christmas.",
     ["port-strike"]),
    ("New smartphone goes on sale", "Queues formed outside shops for the launch.", []),
    ("Port strike ends after pay deal", "Dock workers accepted an offer of 7% over two years.", ["port-strike"]),
    ("Film festival opens with a premiere", "Stars walked the red carpet on the first night.", []),
    ("Dockers vote on new pay offer", "The ballot closes on Friday, the union said.", ["port-strike"]),
    ("Rail fares to rise in January", "Commuters face the biggest increase in a decade.", []),
    ("Port reopens as strikers return to work", "The backlog of containers will take weeks to clear.",
     ["port-strike"]),
    ("Election campaign enters final week", "Party leaders toured marginal seats.", []),
]
PORT = Topic(id="port-strike", name="Port strike", description="Dock workers' strike at the ports: walkouts, "
             "pay talks, ships and containers held up.",
             examples=("Dockers strike over pay\nThe port was shut as workers walked out.",
                       "Union calls port walkout\nDock workers will strike next week."),
             counter_examples=("Airline strike grounds flights\nCabin crew walked out over pay.",),
             threshold=0.0)  # alerts on everything: every item is judged, relevant or not
NEVER = Topic(id="never", name="Port strike, never alerting", description=PORT.description,
              examples=PORT.examples, threshold=1.0)  # alerts on nothing: its judgements are reported misses


@pytest.fixture
def stream_file(tmp_path: Path) -> Path:
    path = tmp_path / "stream.jsonl"
    rows = []
    for i, (title, text, labels) in enumerate(ITEMS):
        # "never" shares the port-strike labels: every positive is a miss for it.
        rows.append({"id": f"i{i:02d}", "title": title, "text": f"{text} More detail follows here.",
                     "labels": labels + (["never"] if labels else []), "published": f"2024-01-{i + 1:02d}"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_judgements_become_topic_versions_the_classifier_picks_up(
        make_settings: Callable[..., Settings], stream_file: Path) -> None:
    s = make_settings(classify={"threads": 2, "backend": "onnx-int8"})
    stream = load_stream(stream_file, "tiny")
    assert stream.ordered and len(stream) == len(ITEMS)
    assert stream.articles[0].summary == "Container traffic stopped as the strike over pay began."
    classifier = build_classifier(s, cache_size=100)
    checkpoints = [0, 2, 4]
    res = run_set(classifier, s, stream, [PORT, NEVER], [np.arange(len(stream))], [None], title="tiny stream",
                  namespace=f"{s.redis.key_prefix}fb", tail=0.25, checkpoints=checkpoints, miss_every=1)

    trace = res.traces[0]
    assert trace.tail_start == 9
    port = trace.points["port-strike"]
    assert [p.n for p in port] == list(range(5))  # 4 judgements, one point each, the start included
    assert [p.position for p in port[1:]] == [0, 1, 2, 3]  # every alert judged, in stream order
    assert [p.kind for p in port[1:]] == ["relevant", "not_relevant", "relevant", "not_relevant"]
    assert [p.version for p in port] == [1, 2, 3, 4, 5]  # each judgement a new topic version
    never = trace.points["never"]
    assert [p.kind for p in never[1:]] == ["miss"] * 4 and all(p.tail.alerts == 0 for p in never)
    assert [p.version for p in never] == [1, 2, 3, 4, 5]
    # What the classifier scored with is what the registry holds: the watcher delivered every version.
    assert len(trace.reload_ms) == 8  # a reported miss is sent before the stream moves on: never together
    assert {t.id: t.version for t in classifier.index.topics} == {"never": 5, "port-strike": 5}
    assert all(p.rest is not None for p in port if p.n in checkpoints)
    assert all(p.rest is None for p in port if p.n not in checkpoints)
    assert port[0].tail.positives == 1 and port[0].rest is not None and port[0].rest.positives == 6

    summary = summarize(res)
    assert [row["judgements"] for row in summary["checkpoints"]] == checkpoints
    assert all(row["runs"] == 1 for row in summary["checkpoints"])
    assert summary["single_judgement"]["judgements"] == 8
    assert summary["judgements_by_kind"]["port-strike"] == {"relevant": 2, "not_relevant": 2, "miss": 0}
    text = tables({"tiny": summary}, tail=0.25, miss_every=1)
    rows = [ln.split()[0] for ln in text.splitlines() if ln[:4].strip().isdigit() and "|" in ln]
    assert rows == ["0", "2", "4"]
    # Each replay cleans up after itself: nothing is left under its namespace.
    assert not list(state.connect(s).scan_iter(match=f"{s.redis.key_prefix}fb*"))


def test_missing_data_says_so_and_fails(tmp_path: Path) -> None:
    missing = tmp_path / "absent.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench.feedback", "--sets", "kobani", "--kobani", str(missing)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert f"data file not found: {missing}" in proc.stderr and "never copied" in proc.stderr


@needs_dev
def test_a_plain_topic_beats_its_keyword_rule_after_a_handful_of_judgements(
        make_settings: Callable[..., Settings]) -> None:
    """examples/kobani/plain.toml (no counter-examples) on same-region news, before and after an editor judges."""
    s = make_settings(classify={"threads": 2, "backend": "onnx-int8"})
    topics = load_topic_file(ROOT / "examples" / "kobani" / "plain.toml")
    classifier = build_classifier(s, cache_size=5_000)
    before = evaluate(classifier, topics, load_labelled(DEV / "kobani_window.jsonl"), shape="feed")
    r = before.topics["kobani-siege"]
    assert r.f1 is not None and r.keyword_f1 is not None and r.best_f1 is not None
    # As written: its headline boundary is held near its examples (0.46 without that) and a headline that does not
    # name the town costs what its description and examples say (0.847 when the examples alone said it): above
    # its rule, short of its best threshold.
    assert r.keyword_f1 < r.f1 < r.best_f1 and r.f1 >= 0.85

    stream = load_stream(DEV / "kobani_window.jsonl", "kobani-plain")
    res = run_set(classifier, s, stream, topics, [np.arange(len(stream))], [None], title="plain topic",
                  namespace=f"{s.redis.key_prefix}fbplain", tail=0.4, checkpoints=[0, 5, 20], miss_every=10)
    rows = {row["judgements"]: row for row in summarize(res)["checkpoints"]}
    # A handful of judgements (its first false alarm becomes a counter-example) make it beat the rule.
    assert rows[5]["rest"]["f1"] > max(r.keyword_f1, rows[0]["rest"]["f1"])
    assert rows[20]["rest"]["f1"] > r.keyword_f1 and rows[20]["tail"]["f1"] >= 0.9
