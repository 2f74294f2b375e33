"""Classify alone, measured in the same run as the end-to-end figure it is compared with.

The articles an end-to-end configuration put on Kafka (the same records: key, value and headers, one per
article) are produced again onto a fresh articles topic, and that configuration's N ``wirewatch classify``
processes, started afresh on fresh topics, consumer group and Redis prefix, with nothing else of the pipeline
running, consume them. The rate is articles / (first produce -> the classify group has committed everything):
it includes Kafka consume and produce, the embedding, scoring and Redis writes of the worker, not fetching,
parsing or alerts. End-to-end / classify-only near 1 means classify is what bounds the pipeline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import tomli_w

from bench.e2e.procs import Meter, Reader, Roles, say, stack_pids
from wirewatch import bus
from wirewatch.ops.lag import Broker
from wirewatch.settings import load_settings


def distinct_records(records: list[Any]) -> list[Any]:
    """The first record of each key, in the order read (a repeat from an at-least-once retry is one article)."""
    seen: set[bytes | None] = set()
    out = []
    for r in records:
        if r.key not in seen:
            seen.add(r.key)
            out.append(r)
    return out


def over(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def match_pairs(records: list[Any]) -> set[tuple[str, str]]:
    """(topic id, article id) of each Match record."""
    return {(m["topic_id"], m["article"]["id"]) for m in (json.loads(r.value) for r in records)}


def measure(cfg_data: dict[str, Any], tmp: Path, records: list[Any], n_classify: int, args: argparse.Namespace,
            tag: str) -> dict[str, Any]:
    """Classify ``records`` (articles already produced once) with ``n_classify`` fresh classify processes."""
    run = f"co{int(time.time() * 1000) % 10**9}"
    names = {k: f"{run}.{k}" for k in ("articles", "matches", "deliveries")}
    kafka = cfg_data["kafka"] | {"topics": names, "group_prefix": run}
    settings = load_settings(None, **(cfg_data | {"redis": {"key_prefix": f"{run}:"}, "kafka": kafka}))
    bus.ensure_default_topics(settings)
    cfg = tmp / f"{run}.toml"
    cfg.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    logs = tmp / run
    logs.mkdir()
    workers = [f"classify-{i}" for i in range(n_classify)]
    group = bus.role_group(settings, "classify")
    roles = Roles(cfg, logs, tag)
    say(f"[{tag}] classify only: {n_classify} classify process(es), {len(records)} articles onto {names['articles']}")
    result: dict[str, Any] = {"articles": len(records), "timed_out": False}
    matches = Reader(settings, names["matches"], settings.kafka.partitions)
    try:
        for w in workers:
            roles.start(w)
        roles.wait_assigned(workers, args.start_timeout)
        cpu0 = roles.cpu()
        meter = Meter(stack_pids(settings))
        producer = bus.Producer(settings, client_id="bench")
        started = time.time()
        try:
            producer.send_many([bus.Outgoing(names["articles"], r.key, r.value, tuple(r.headers or ()))
                                for r in records])
        finally:
            producer.close()
        produced = time.time()
        lag = len(records)
        with Broker(settings) as broker:
            deadline = time.monotonic() + args.run_timeout
            while time.monotonic() < deadline:
                roles.revive()
                lags = broker.lags([names["articles"]], groups=[group], subscribed={group: [names["articles"]]})
                lag = sum(x.lag for x in lags if x.topic == names["articles"])
                if lags and lag == 0:
                    break
                time.sleep(0.25)
            else:
                result["timed_out"] = True
                say(f"[{tag}] classify only timed out after {args.run_timeout:g} s (lag {lag}); logs in {logs}")
        done = time.time()
        result |= {"articles_per_s": len(records) / max(done - started, 1e-9) if lag == 0 else 0.0,
                   "seconds": done - started, "produce_seconds": produced - started, "not_committed": lag,
                   "processes": roles.usage(cpu0, done - started), "shared": meter.read(),
                   "restarts": dict(roles.restarts)}
        result["match_pairs"] = len(match_pairs(matches.drain()))
    finally:
        roles.stop()
        matches.close()
    return result
