"""``bench.alerts``'s feeder: the paced run offers what the clock says is due, and every match it produced
carries the time of its produce call (the latency run reads both from the feeder's own process)."""

from __future__ import annotations

from typing import Any

from bench.alerts.feed import Feeder, paced
from wirewatch.records import Match, decode
from wirewatch.settings import load_settings


class Recording:
    """Stands in for the producer: keeps what was handed to ``send_many``."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def send_many(self, items: list[Any]) -> None:
        self.items.extend(items)


def test_paced_offers_rate_times_seconds_and_stamps_every_match() -> None:
    settings = load_settings(None)
    feeder = Feeder(topics=5, first=100)
    out = Recording()
    offered, rate = paced(feeder, out, settings, rate=200.0, seconds=0.5)  # type: ignore[arg-type]
    assert offered == 100 == len(out.items)
    assert rate > 150.0
    ids = [decode(Match, o.value).article.id for o in out.items]
    assert ids[0] == "a101" and ids[-1] == "a200" and len(set(ids)) == 100  # numbered after the ones before it
    assert set(feeder.produced_at) == set(ids)
    stamps = [feeder.produced_at[i] for i in ids]
    assert stamps == sorted(stamps)
    assert all(o.topic == settings.kafka.topics.matches for o in out.items)


def test_one_match_in_five_or_so_copies_a_recent_story_from_another_outlet() -> None:
    feeder = Feeder(topics=5)
    sources = [feeder.next().article.source for _ in range(500)]
    copies = sources.count("Copy Outlet")
    assert 60 <= copies <= 140
    assert sources[0] == "Wire"
