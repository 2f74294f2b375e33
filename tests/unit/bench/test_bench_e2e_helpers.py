"""``bench.e2e``'s helpers: one record per article for the classify-only pass, the ratios, the summary keys,
the farm's feed count, the wait loop's tally and the CPU meter."""

from __future__ import annotations

import json
from collections import namedtuple
from typing import Any

import pytest

from bench.e2e.__main__ import summarize
from bench.e2e.account import Tally
from bench.e2e.classify_only import distinct_records, match_pairs, over
from bench.e2e.farm import feeds_for
from bench.e2e.procs import Meter, Roles, runqueue_wait_s

Rec = namedtuple("Rec", "key value")


def test_distinct_records_keeps_the_first_of_each_key_in_order() -> None:
    recs = [Rec(b"a", b"1"), Rec(b"b", b"2"), Rec(b"a", b"3"), Rec(b"c", b"4"), Rec(b"b", b"5")]
    assert [r.value for r in distinct_records(recs)] == [b"1", b"2", b"4"]
    assert distinct_records([]) == []


def test_over_is_none_when_either_side_is_missing_or_the_denominator_not_positive() -> None:
    assert over(40.0, 50.0) == 0.8
    assert over(None, 50.0) is None
    assert over(40.0, None) is None
    assert over(40.0, 0.0) is None
    assert over(0.0, 50.0) == 0.0


def test_match_pairs_counts_each_topic_and_article_once() -> None:
    def m(topic: str, art: str) -> Rec:
        return Rec(art.encode(), json.dumps({"topic_id": topic, "article": {"id": art}}).encode())

    assert match_pairs([m("sport", "a1"), m("sport", "a1"), m("tech", "a1"), m("sport", "a2")]) == {
        ("sport", "a1"), ("tech", "a1"), ("sport", "a2")}


def _run(backend: str, n: int, e2e: float, alone: float | None) -> dict[str, Any]:
    run: dict[str, Any] = {"backend": backend, "classify_processes": n, "articles_per_s": e2e, "lost": 0,
                           "duplicates": 0, "p99_fetch_to_notify_s": 1.5}
    if alone is not None:
        run |= {"classify_only": {"articles_per_s": alone}, "classify_only_articles_per_s": alone,
                "e2e_over_classify_only": over(e2e, alone)}
    return run


def test_summary_keeps_its_keys_and_adds_the_first_configurations_classify_only_rate_and_ratio() -> None:
    runs = [_run("onnx-int8", 1, 60.0, 75.0), _run("onnx-int8", 2, 66.0, 90.0), _run("torch", 1, 30.0, 40.0)]
    doc = summarize(runs, None, {"model": "x"}, 12.0)
    for key in ("articles_per_s", "p99_fetch_to_notify_s", "lost", "duplicates", "speedup_vs_torch", "scaling",
                "cpu", "runs", "latency_run", "load_avg_after"):
        assert key in doc, key
    assert doc["articles_per_s"] == 60.0
    assert doc["classify_only_articles_per_s"] == 75.0
    assert doc["e2e_over_classify_only"] == 0.8
    assert doc["speedup_vs_torch"] == 2.0
    assert doc["scaling"] == {"onnx-int8:1": 1.0, "onnx-int8:2": 1.1}
    assert doc["classify_only_scaling"] == {"onnx-int8:1": 1.0, "onnx-int8:2": 1.2}


def test_summary_without_the_classify_only_pass_reports_none() -> None:
    doc = summarize([_run("onnx-int8", 1, 60.0, None)], None, {"model": "x"}, 5.0)
    assert doc["classify_only_articles_per_s"] is None
    assert doc["e2e_over_classify_only"] is None
    assert doc["classify_only_scaling"] == {}


def test_feeds_for_fits_a_backlog_in_the_feeds_windows() -> None:
    assert feeds_for(600) == 30
    assert feeds_for(1500) == 30
    assert feeds_for(1501) == 31
    assert feeds_for(3000) == 60
    assert feeds_for(30, 3) == 3
    with pytest.raises(ValueError, match="at least 60"):
        feeds_for(3000, 30)


def test_tally_counts_each_record_once_and_completes_when_every_due_pair_is_notified_or_suppressed() -> None:
    Art = namedtuple("Art", "key value")
    Got = namedtuple("Got", "body")

    class Receiver:
        received: list[Any] = []

    def art(aid: str) -> Any:
        return Art(aid.encode(), json.dumps({"url": f"https://x/{aid}"}).encode())

    def match(topic: str, aid: str) -> Any:
        return Rec(aid.encode(), json.dumps({"topic_id": topic, "article": {"url": f"https://x/{aid}"}}).encode())

    rx = Receiver()
    tally = Tally(rx, "r1")  # type: ignore[arg-type]
    tally.add([art("a"), art("b")], [match("sport", "a"), match("tech", "b")], [])
    assert tally.keys == {b"a", b"b"} and len(tally.due) == 2 and not tally.complete()
    rx.received.append(Got({"subscription_id": "r1-sport", "items": [{"url": "https://x/a"}]}))
    rx.received.append(Got({"subscription_id": "r0-tech", "items": [{"url": "https://x/b"}]}))  # another run's
    tally.add([art("a")], [match("sport", "a")], [])  # a repeat changes nothing
    assert tally.got == {("sport", "https://x/a")} and len(tally.due) == 2 and not tally.complete()
    tally.add([], [], [Rec(b"b", json.dumps({"subscription_id": "r1-tech", "status": "suppressed",
                                              "reason": "story_already_alerted", "article_ids": ["b"]}).encode())])
    assert tally.folded() == {("tech", "https://x/b"): "story_already_alerted"}
    assert tally.complete()


def test_meter_reports_the_harness_and_the_machine() -> None:
    import os

    got = Meter({"self": os.getpid()}).read()
    assert set(got) == {"harness", "self", "machine_busy_cores", "seconds"}
    assert got["harness"]["cpu_s"] >= 0 and got["machine_busy_cores"] >= 0


def test_roles_usage_counts_a_restarted_process_from_its_restart(tmp_path: Any) -> None:
    import subprocess
    import sys

    roles = Roles(tmp_path / "c.toml", tmp_path, "t")
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    roles.procs["w"] = first
    cpu0 = roles.cpu()
    roles.procs["w"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])  # as revive does
    try:
        got = roles.usage({"w": cpu0["w"] + 100.0}, 1.0)["w"]  # an old base that would go negative
        assert 0 <= got["cpu_s"] < 5
    finally:
        for p in (first, roles.procs["w"]):
            p.kill()
            p.wait()


def test_runqueue_wait_of_this_process_is_a_non_negative_number_and_nan_for_no_process() -> None:
    import math
    import os

    assert runqueue_wait_s(os.getpid()) >= 0
    assert math.isnan(runqueue_wait_s(2**22 + 7))
