"""Embedding cache, per-topic model and batch scoring with evidence, on a deterministic fake embedder."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from classify_fakes import BagOfWordsEmbedder, fake_embedder

import classify.model as model_module
from classify.background import Background
from classify.classifier import Classifier
from classify.embedder import CachedEmbedder
from classify.model import FEATURES, LONE_HEADLINE_MARGIN, SIM_NAMES, TopicVectors, fit, sim_features, training_set
from classify.scorer import TopicIndex
from classify.topics import Doc
from wirewatch.records import Article, Topic

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BACKGROUND = [
    "stock markets fall on weak factory data", "team wins cup final after extra time",
    "new phone has folding screen", "heatwave warning as temperatures rise", "minister resigns over expenses",
    "film wins top prize at festival", "bank raises interest rates", "storm cuts power to thousands",
    "court jails fraudster", "school funding increased", "vaccine trial shows promise", "train fares rise",
]
TRAINS = Topic(
    id="trains", name="Rail strikes", description="rail workers strike trains cancelled",
    examples=("rail strike cancels trains", "train drivers strike over pay", "rail union strike trains halted"),
    counter_examples=("model trains exhibition opens",), include_any=("strike",), threshold=0.5, version=7,
)
FOOD = Topic(id="food", name="Food prices", description="food prices rise in shops",
             examples=("food prices rise again", "shoppers pay more for food"), exclude=("pet",))


def article(title: str, summary: str = "") -> Article:
    return Article(id=f"a-{abs(hash(title))}", title=title, summary=summary, published_at=NOW, fetched_at=NOW,
                   feed_url="https://example.org/feed")


def classifier() -> Classifier:
    emb = fake_embedder()
    c = Classifier(emb, Background.build(BACKGROUND, emb))
    c.set_topics([TRAINS, FOOD, Topic(id="off", name="Off", enabled=False)])
    return c


def test_cache_embeds_each_distinct_text_once_and_keeps_order() -> None:
    inner = BagOfWordsEmbedder()
    cached = CachedEmbedder(inner, size=10)
    first = cached.embed(["a b", "c d", "a b"])
    again = cached.embed(["c d", "e f"])
    assert inner.calls == [["a b", "c d"], ["e f"]]
    assert np.allclose(first[0], first[2]) and np.allclose(first[1], again[0])
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0)
    assert (cached.hits, cached.misses) == (2, 3)


def test_cache_is_bounded_lru() -> None:
    inner = BagOfWordsEmbedder()
    cached = CachedEmbedder(inner, size=2)
    cached.embed(["a", "b"])
    cached.embed(["a", "c"])  # evicts b, the least recently used
    cached.embed(["a", "b"])
    assert inner.calls[-1] == ["b"]


def test_examples_are_scored_leave_one_out_in_training() -> None:
    emb = fake_embedder()
    tv = TopicVectors.build(TRAINS, emb)
    own = sim_features(tv.examples[:1], tv.desc, tv.examples, tv.counters)[0]
    assert own[FEATURES.index("ex_max")] > 0.999  # an example is its own nearest neighbour...
    model = fit(tv, Background.build(BACKGROUND, emb))
    assert model.kind == "learned" and model.positives == 3 and model.negatives == 1 + len(BACKGROUND)
    # ...so training must not have seen that: evidence weights stay positive, counter-similarity negative.
    w = dict(zip(SIM_NAMES, model.weights, strict=True))
    assert w["ex_max"] >= 0 and w["desc"] >= 0 and w["cx_max"] <= 0
    # Background articles the first fit placed in the topic are set aside, so a few may score above 0.5.
    assert np.mean(model.background_scores < 0.5) >= 1 - (model.set_aside + 1) / len(BACKGROUND)


def test_topic_without_examples_uses_prior_calibrated_on_background() -> None:
    emb = fake_embedder()
    bare = Topic(id="bare", name="Volcano eruptions", description="volcano erupts lava ash")
    model = fit(TopicVectors.build(bare, emb), Background.build(BACKGROUND, emb))
    assert model.kind == "prior"
    assert int((model.background_scores >= 0.5).sum()) <= 1
    # Calibrated so that one everyday item in a thousand passes (at one in a hundred several of these 800 would).
    words = [w for t in BACKGROUND for w in t.split()]
    everyday = [" ".join(words[(i * k) % len(words)] for k in (1, 3, 7, 11, 13)) + " lava" * (i % 50 == 0)
                for i in range(1, 801)]
    wide = fit(TopicVectors.build(bare, emb), Background.build(everyday, emb, headlines=False))
    assert int((wide.background_scores >= 0.5).sum()) <= 1


def test_matches_carry_score_evidence_version_and_unit_vector() -> None:
    c = classifier()
    batch = c.classify([article("Rail strike: trains cancelled as drivers walk out"),
                        article("Heatwave warning for the weekend")])
    assert [t.id for t in batch.index.topics] == ["food", "trains"]  # disabled topic left out
    assert len(batch.matches) == 1
    m = batch.matches[0]
    assert m.topic_id == "trains" and m.topic_version == 7 and m.threshold == 0.5 and 0.5 <= m.score <= 1.0
    assert m.evidence.closest_kind in ("example", "description") and m.evidence.closest
    assert m.evidence.keywords == ("strike",)
    assert m.evidence.counter_example == "model trains exhibition opens" and m.evidence.counter_margin is not None
    assert set(m.evidence.features) == set(FEATURES)
    assert m.vector is not None and abs(float(np.linalg.norm(m.vector)) - 1.0) < 1e-4
    assert m.model.name == "bag-of-words" and m.model.backend == "fake"


def test_an_article_may_match_several_topics() -> None:
    c = classifier()
    batch = c.classify([article("Rail strike and food prices rise", "train drivers strike while food prices rise")])
    assert sorted(m.topic_id for m in batch.matches) == ["food", "trains"]


def test_exclude_rule_vetoes_a_topic() -> None:
    c = classifier()
    batch = c.classify([article("Pet food prices rise in shops")])
    col = batch.index.position("food")
    assert batch.scores.excluded[0, col] and batch.scores.scores[0, col] == 0.0
    assert not batch.matches


def test_scores_are_in_unit_interval_and_empty_inputs_are_fine() -> None:
    c = classifier()
    batch = c.classify([article(t) for t in BACKGROUND])
    assert ((batch.scores.scores >= 0) & (batch.scores.scores <= 1)).all()
    assert c.classify([]).matches == []
    empty = TopicIndex([], 64).score(np.zeros((2, 64), np.float32), [Doc.of("a"), Doc.of("b")])
    assert empty.scores.shape == (2, 0)


def test_topics_with_and_without_examples_and_counters_stack_correctly() -> None:
    emb = fake_embedder()
    bg = Background.build(BACKGROUND, emb)
    topics = [Topic(id="a", name="volcano lava"), TRAINS, Topic(id="c", name="cup final", examples=("cup final win",)),
              FOOD]
    index = TopicIndex.build(topics, emb, bg)
    v = emb.embed(["train drivers strike over pay"])
    batch = index.score(v, [Doc.of("train drivers strike over pay")])
    for col, topic in enumerate(index.topics):
        tv, _ = index.entries[col]
        expected = sim_features(v, tv.desc, tv.examples, tv.counters)[0]
        assert np.allclose(batch.features[0, col, :5], expected, atol=1e-5), topic.id


def test_unchanged_topics_are_not_refitted_on_reload() -> None:
    c = classifier()
    first = {tv.topic.id: m for tv, m in c.index.entries}
    changed = FOOD.model_copy(update={"examples": (*FOOD.examples, "bread costs more"), "version": 2})
    c.set_topics([TRAINS, changed])
    again = {tv.topic.id: m for tv, m in c.index.entries}
    assert again["trains"] is first["trains"]
    assert again["food"] is not first["food"] and c.index.topics[0].version == 2


def test_headlines_alone_are_scored_by_weights_fitted_on_headlines() -> None:
    emb = fake_embedder()
    bg = Background.build([f"{t}\nofficials said on monday the figures were published" for t in BACKGROUND], emb)
    topic = TRAINS.model_copy(update={"examples": tuple(f"{e}\ncommuters faced delays" for e in TRAINS.examples)})
    index = TopicIndex.build([topic], emb, bg)
    _, model = index.entries[0]
    assert model.head_weights is not None and not np.allclose(model.head_weights, model.weights)
    texts = ["train drivers strike over pay", "train drivers strike over pay\ncommuters faced delays"]
    docs = [Doc.of(t) for t in texts]
    batch = index.score(emb.embed(texts), docs)
    assert batch.features[:, 0, FEATURES.index("short")].tolist() == [1.0, 0.0]
    # The index and the model agree on both shapes: each row went through its own shape's weights.
    assert np.allclose(batch.scores[:, 0], 1 / (1 + np.exp(-model.logits(batch.features[:, 0]))), atol=1e-9)
    assert abs(float(batch.scores[0, 0] - batch.scores[1, 0])) > 1e-6


def test_nearest_example_peer_gives_each_item_one_topic_per_desk_and_none_outside() -> None:
    from classify.evaluate import nearest_example_peer

    ex_max = np.array([[0.9, 0.2, 0.5, 0.1],
                       [0.1, 0.3, 0.2, 0.8],
                       [0.4, 0.6, 0.7, 0.9]])
    got = nearest_example_peer(ex_max, ["news", "news", None, "sport-desk"])
    assert got.tolist() == [[True, False, False, True],
                            [False, True, False, True],
                            [False, True, False, True]]
    assert not nearest_example_peer(np.zeros((0, 2)), ["a", "a"]).any()


def test_a_topic_without_counter_examples_keeps_its_headline_boundary_near_its_least_typical_example(
        monkeypatch: pytest.MonkeyPatch) -> None:
    emb = fake_embedder()
    bg = Background.build(BACKGROUND, emb)
    # A narrow event: its examples share its words, which everyday news never uses.
    siege = Topic(id="siege", name="Siege of Vardenburg", description="siege of vardenburg town",
                  examples=("siege of vardenburg town shelled", "vardenburg town siege fighters",
                            "siege of vardenburg town convoy", "vardenburg siege town refugees"),
                  include_any=("vardenburg",))
    lone = TopicVectors.build(siege, emb)
    with_counter = siege.model_copy(update={"counter_examples": ("ostmark harbour blockade lifted",)})
    paired = TopicVectors.build(with_counter, emb)
    monkeypatch.setattr(model_module, "LONE_HEADLINE_MARGIN", 1e9)  # a margin no example reaches: no move
    free, free_paired = fit(lone, bg), fit(paired, bg)
    monkeypatch.undo()
    moved, kept = fit(lone, bg), fit(paired, bg)

    heads = training_set(lone, bg).subset(training_set(lone, bg).short)
    pos = heads.x[heads.y == 1]
    w0, b0 = free.shape_weights(True)
    lowest = float((pos @ w0 + b0).min())
    assert lowest > LONE_HEADLINE_MARGIN  # far from everyday news, so the rule has something to do here
    w1, b1 = moved.shape_weights(True)
    assert np.allclose(w1, w0) and b1 == pytest.approx(b0 - (lowest - LONE_HEADLINE_MARGIN))
    assert float((pos @ w1 + b1).min()) == pytest.approx(LONE_HEADLINE_MARGIN)
    # Longer items are scored as before, and a topic with a counter-example is left alone.
    assert np.allclose(moved.weights, free.weights) and moved.bias == free.bias
    paired_heads = training_set(paired, bg).subset(training_set(paired, bg).short)
    wp, bp = free_paired.shape_weights(True)
    assert float((paired_heads.x[paired_heads.y == 1] @ wp + bp).min()) > LONE_HEADLINE_MARGIN  # it would move
    assert kept.shape_weights(True)[1] == free_paired.shape_weights(True)[1]
    assert np.allclose(kept.shape_weights(True)[0], free_paired.shape_weights(True)[0])
    # So a headline that resembles the examples less than they resemble each other no longer passes on that alone.
    docs = [Doc.of("town siege")]
    vec = emb.embed(["town siege"])
    before = TopicIndex([(lone, free)], emb.dim).score(vec, docs).scores[0, 0]
    after = TopicIndex([(lone, moved)], emb.dim).score(vec, docs).scores[0, 0]
    assert after < before


def test_a_topic_matches_only_articles_published_inside_its_window() -> None:
    emb = fake_embedder()
    c = Classifier(emb, Background.build(BACKGROUND, emb))
    c.set_topics([TRAINS.model_copy(update={"since": datetime(2025, 12, 1, tzinfo=UTC),
                                            "until": datetime(2026, 2, 1, tzinfo=UTC)}), FOOD])
    text = "Rail strike: trains cancelled as drivers walk out"

    def at(when: datetime, **extra: object) -> Article:
        return article(text).model_copy(update={"id": f"a-{when:%Y%m%d}", "published_at": when, **extra})

    before, inside, after = datetime(2025, 11, 30, tzinfo=UTC), NOW, datetime(2026, 2, 1, tzinfo=UTC)
    batch = c.classify([at(before), at(inside), at(after)])
    col = batch.index.position("trains")
    assert [m.article.id for m in batch.matches] == ["a-20260101"]
    assert batch.scores.excluded[:, col].tolist() == [True, False, True]
    assert batch.scores.scores[[0, 2], col].tolist() == [0.0, 0.0]
    assert not batch.scores.excluded[:, batch.index.position("food")].any()  # a topic without a window: every date
    undated = Doc.of(text)  # no publication time known: inside every window
    assert not batch.index.outside([undated]).any()
