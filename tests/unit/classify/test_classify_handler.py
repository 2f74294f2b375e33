"""The worker's batch handler with an in-memory producer: matches keyed by article id, replays marked and
restricted to the replayed topic, nothing produced for articles that match nothing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from classify_fakes import fake_embedder

from classify.background import Background
from classify.classifier import Classifier
from classify.worker import REPLAY_HEADER, REPLAY_TOPIC_HEADER, Handler
from wirewatch import bus
from wirewatch.records import Article, Match, Topic, decode, encode
from wirewatch.settings import load_settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = [
    Topic(id="rail", name="Rail strikes", description="rail workers strike trains cancelled",
          examples=("rail strike cancels trains", "train drivers strike over pay")),
    Topic(id="strikes", name="Strikes", description="workers strike over pay",
          examples=("workers strike over pay", "union calls strike")),
]


class ListProducer:
    def __init__(self) -> None:
        self.sent: list[bus.Outgoing] = []

    def send_many(self, items: Iterable[bus.Outgoing], timeout_s: float = 60.0) -> int:
        items = list(items)
        self.sent += items
        return len(items)


def consumed(i: int, title: str, headers: list[tuple[str, bytes]] | None = None) -> bus.Consumed[Article]:
    a = Article(id=f"id-{i}", title=title, published_at=NOW, fetched_at=NOW, feed_url="f")
    return bus.Consumed("articles", 0, i, a.id.encode(), a, 0, headers or [], encode(a))


def handler() -> tuple[Handler, ListProducer]:
    emb = fake_embedder()
    c = Classifier(emb, Background.build(["stock markets fall", "cup final won", "storm cuts power",
                                          "film wins prize", "new phone launched"], emb))
    c.set_topics(TOPICS)
    p = ListProducer()
    return Handler(load_settings(None), c, p, None), p  # type: ignore[arg-type]


def test_matches_are_produced_keyed_by_article_id() -> None:
    h, p = handler()
    h([consumed(1, "Rail strike: train drivers strike over pay"), consumed(2, "Storm cuts power")])
    assert {(o.key, decode(Match, o.value).topic_id) for o in p.sent} == {("id-1", "rail"), ("id-1", "strikes")}
    assert all(o.topic == "wirewatch.matches" for o in p.sent)


def test_replay_is_marked_and_limited_to_its_topic() -> None:
    h, p = handler()
    headers: Any = [(REPLAY_HEADER, b"r1"), (REPLAY_TOPIC_HEADER, b"rail")]
    h([consumed(3, "Rail strike: train drivers strike over pay", headers)])
    got = [decode(Match, o.value) for o in p.sent]
    assert [(m.topic_id, m.replay) for m in got] == [("rail", True)]
