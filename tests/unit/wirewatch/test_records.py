"""Records: frozen values, a versioned JSON codec that round-trips and rejects what it cannot read."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from wirewatch.records import (
    Article,
    ChannelKind,
    ChannelSpec,
    Delivery,
    DeliveryStatus,
    Evidence,
    Match,
    ModelInfo,
    RecordError,
    Subscription,
    Topic,
    decode,
    encode,
)

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
aware = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.sampled_from([UTC, None]))

articles = st.builds(
    Article,
    id=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    url=st.one_of(st.none(), st.just("https://example.com/a")),
    title=text, summary=text, content=st.one_of(st.none(), text),
    published_at=aware, fetched_at=aware, feed_url=st.just("https://example.com/feed"),
    source=text, authors=st.lists(text, max_size=3).map(tuple), language=st.one_of(st.none(), st.just("en")),
    tags=st.lists(text, max_size=3).map(tuple), update=st.booleans(),
)


@given(articles)
def test_article_round_trip(article: Article) -> None:
    back = decode(Article, encode(article))
    assert back == article
    assert back.published_at.tzinfo is not None


@given(articles, st.floats(0, 1), st.floats(0, 1), st.lists(st.floats(-1, 1, width=32), max_size=8))
def test_match_round_trip(article: Article, score: float, threshold: float, vec: list[float]) -> None:
    m = Match(article=article, topic_id="aleppo", topic_version=3, score=score, threshold=threshold,
              evidence=Evidence(closest="desc", closest_kind="description", similarity=0.7, keywords=("aleppo",)),
              model=ModelInfo(name="all-MiniLM-L6-v2", backend="onnx-int8"), vector=tuple(vec))
    assert decode(Match, encode(m)) == m


def test_subscription_and_delivery_round_trip() -> None:
    sub = Subscription(id="s1", topic_id="aleppo",
                       channel=ChannelSpec(type=ChannelKind.WEBHOOK, target="https://example.com/hook", secret="k"))
    assert decode(Subscription, encode(sub)) == sub
    d = Delivery(id="d1", subscription_id="s1", story_id="st1", status=DeliveryStatus.SUPPRESSED, reason="quiet hours")
    assert decode(Delivery, encode(d)) == d


def test_records_are_frozen() -> None:
    t = Topic(id="aleppo", name="Aleppo ceasefire")
    with pytest.raises(ValidationError):
        t.name = "x"  # type: ignore[misc]
    assert t.model_copy(update={"version": 2}).version == 2 and t.version == 1


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xff\xfe not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"id": "x"}', "missing schema version"),
        (b'{"v": "2.0", "id": "x", "name": "y"}', "unsupported schema version"),
        (b'{"v": "1.0", "id": "Bad Id!", "name": "y"}', "field 'id'"),
    ],
)
def test_decode_rejects_with_clear_reason(payload: bytes, needle: str) -> None:
    with pytest.raises(RecordError, match=needle):
        decode(Topic, payload)


def test_newer_minor_version_and_unknown_fields_are_accepted() -> None:
    t = decode(Topic, json.dumps({"v": "1.7", "id": "t", "name": "T", "brand_new_field": 1}).encode())
    assert t.id == "t"


def test_naive_datetimes_become_utc() -> None:
    a = Article(id="a" * 32, title="t", published_at=datetime(2016, 12, 13, 10, 0),
                fetched_at=datetime(2016, 12, 13, 11, 0, tzinfo=UTC) + timedelta(hours=0), feed_url="https://x/f")
    assert a.published_at.tzinfo == UTC


def test_topic_window_takes_bare_dates_as_whole_utc_days_and_round_trips() -> None:
    t = Topic.model_validate({"id": "t", "name": "T", "since": date(2016, 11, 15), "until": "2016-12-31"})
    assert t.since == datetime(2016, 11, 15, tzinfo=UTC)
    assert t.until == datetime(2017, 1, 1, tzinfo=UTC)  # the end of the named day
    assert decode(Topic, encode(t)) == t  # stored as date-times, not shifted a second day
    assert not t.in_window(datetime(2016, 11, 14, 23, 59, tzinfo=UTC))
    assert t.in_window(datetime(2016, 11, 15, tzinfo=UTC)) and t.in_window(datetime(2016, 12, 31, 23, 59, tzinfo=UTC))
    assert not t.in_window(datetime(2017, 1, 1, tzinfo=UTC))
    assert t.in_window(None)  # an undated article is never dropped for its date
    naive = Topic(id="t", name="T", since=datetime(2016, 11, 15, 12, 0))
    assert naive.since == datetime(2016, 11, 15, 12, 0, tzinfo=UTC)
    assert Topic(id="t", name="T").in_window(datetime(1990, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("window", [{"since": "2016-12-01", "until": "2016-11-30"},
                                    {"since": "2016-12-01T00:00:00Z", "until": "2016-12-01T00:00:00Z"},
                                    {"since": "next tuesday"}])
def test_topic_window_that_is_empty_or_unreadable_is_refused(window: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="until|since"):
        Topic.model_validate({"id": "t", "name": "T", **window})
