"""The alerts benchmark's feeder: builds matches and produces them, up front or paced by the clock.

The paced run happens in a process of its own, as classify is one in production: building a match (a
384-float vector in JSON) and producing it costs about as much CPU as the worker spends folding it, and
in the worker's process that cost took the worker's interpreter lock while its latency was measured.

    python -m bench.alerts.feed SPEC.json OUT.json

SPEC holds the settings overrides (``base``), ``topics``, ``first`` (the first article number), ``rate`` and
``seconds``. OUT gets ``offered`` (matches produced), ``offered_per_s`` and ``produced_at``: article id ->
``time.monotonic()`` at its produce call, which on Linux reads the same clock in every process.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from wirewatch.bus import Outgoing, Producer
from wirewatch.records import Article, Match, ModelInfo, encode, utcnow
from wirewatch.settings import Settings, load_settings

WORDS = ("ministry harbour election drought vaccine pipeline bridge strike tariff festival satellite court railway "
         "refinery museum stadium protest budget reactor glacier airline census merger treaty wildfire cyclone "
         "subway orchestra lottery telescope vineyard factory bakery ferry prison archive border convoy summit "
         "ceasefire outbreak verdict landslide blackout shipment").split()


class Feeder:
    """Builds matches: new stories, and copies of recent ones from another outlet."""

    def __init__(self, topics: int, seed: int = 7, first: int = 0) -> None:
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.topics = topics
        self.recent: list[tuple[str, str, np.ndarray]] = []
        self.n = first
        self.produced_at: dict[str, float] = {}

    def next(self) -> Match:
        self.n += 1
        aid = f"a{self.n}"
        if self.recent and self.rng.random() < 0.2:
            topic, title, vec = self.rng.choice(self.recent[-200:])
            vec = vec + self.np.normal(0, 0.01, vec.shape).astype(np.float32)
            source = "Copy Outlet"
        else:
            topic = f"t{self.rng.randrange(self.topics)}"
            title = " ".join(self.rng.sample(WORDS, 8)).capitalize()
            vec = self.np.normal(0, 1, 384).astype(np.float32)
            source = "Wire"
            self.recent.append((topic, title, vec))
        vec = vec / np.linalg.norm(vec)
        now = utcnow()
        art = Article(id=aid, url=f"https://news.example/{aid}", title=title, summary=title + " in detail.",
                      published_at=now, fetched_at=now, feed_url="https://news.example/feed", source=source)
        return Match(article=art, topic_id=topic, score=self.rng.uniform(0.5, 1.0), threshold=0.5,
                     model=ModelInfo(name="bench"), vector=tuple(float(x) for x in vec))

    def produce(self, producer: Producer, settings: Settings, count: int) -> None:
        items = []
        for _ in range(count):
            m = self.next()
            self.produced_at[m.article.id] = time.monotonic()
            items.append(Outgoing(settings.kafka.topics.matches, m.article.id, encode(m)))
        producer.send_many(items)


def paced(feeder: Feeder, producer: Producer, settings: Settings, rate: float, seconds: float) -> tuple[int, float]:
    """Produce ``rate`` matches per second for ``seconds``; returns (matches produced, the rate measured).

    What is due follows the clock, not the loop: a produce that takes longer than a tick is made up at the
    next one, so the worker is offered ``rate`` however long the feeder's own calls take.
    """
    start = time.monotonic()
    tick = 0.05
    offered = 0
    last_produce = start
    while (elapsed := time.monotonic() - start) < seconds:
        n = int(rate * elapsed) - offered
        if n > 0:
            feeder.produce(producer, settings, n)
            offered += n
            last_produce = time.monotonic()
        time.sleep(max(0.0, start + tick * (1 + int((time.monotonic() - start) / tick)) - time.monotonic()))
    if (rest := int(rate * seconds) - offered) > 0:
        feeder.produce(producer, settings, rest)
        offered += rest
        last_produce = time.monotonic()
    return offered, offered / max(last_produce - start, 1e-9)


def main(spec_path: str, out_path: str) -> None:
    spec: dict[str, Any] = json.loads(Path(spec_path).read_text())
    settings = load_settings(None, **spec["base"])
    feeder = Feeder(spec["topics"], seed=spec.get("seed", 11), first=spec["first"])
    producer = Producer(settings, client_id="bench-feed")
    try:
        offered, rate = paced(feeder, producer, settings, spec["rate"], spec["seconds"])
    finally:
        producer.close()
    Path(out_path).write_text(json.dumps({"offered": offered, "offered_per_s": rate,
                                          "produced_at": feeder.produced_at}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
