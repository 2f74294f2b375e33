"""Keyword evidence, headline-shaped training, desks and the evaluation shapes, on the bag-of-words embedder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from classify_fakes import BagOfWordsEmbedder, fake_embedder

from classify.background import Background, headline, is_roundup, is_short, shipped_background
from classify.classifier import Classifier
from classify.embedder import CachedEmbedder
from classify.evaluate import FEED_SUMMARY_CHARS, Labelled, evaluate, first_sentence
from classify.evidence import keyword_evidence, keyword_features
from classify.model import FEATURES, TopicVectors, desk_siblings, fit
from classify.topics import Doc
from wirewatch.records import Article, Topic

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# A background of everyday items in both shapes: the words of the topics below never appear in it, except
# "market", which everyday business news uses all the time.
DESKS = ["stock market", "cup final", "new phone", "heatwave", "minister", "film prize", "interest rates",
         "storm", "court", "school", "vaccine", "train fares", "election", "concert", "flood", "strike"]
BACKGROUND = [f"{d} news item {i}\n{d} report number {i} on the {d} story" for i in range(14) for d in DESKS]
BACKGROUND += [f"market report {i}\nshares and the market moved today" for i in range(30)]
SIEGE = Topic(
    id="siege", name="Siege of Vardenburg", description="the siege of the town of Vardenburg",
    examples=("Fighters close in on Vardenburg\nthe town is shelled",
              "Air strikes around besieged Vardenburg\nguns hit",
              "Refugees flee the siege across the border\nfamilies escape", "Reinforcements reach Vardenburg\nconvoy",
              "Defenders retake Vardenburg\nflag raised over the ruined town"),
    counter_examples=("Siege of Ostmark harbour ends\nthe blockade of Ostmark lifted",),
    include_any=("Vardenburg",),
)
MARKETS = Topic(
    id="markets", name="Grain markets", description="grain prices at the market",
    examples=("Grain prices rise at market\nwheat dearer", "Wheat market slumps\ngrain glut",
              "Grain traders at the market\nbarley up"),
    include_any=("market",),
)


def article(title: str, summary: str = "") -> Article:
    return Article(id=f"a-{abs(hash(title))}", title=title, summary=summary, published_at=NOW, fetched_at=NOW,
                   feed_url="https://example.org/feed")


@pytest.fixture(scope="module")
def background() -> Background:
    return Background.build(BACKGROUND, fake_embedder(10_000))


def test_background_and_topics_carry_each_text_headline_only_as_well(background: Background) -> None:
    assert len(background.vectors) == 2 * len(BACKGROUND)
    assert sum(is_short(d) for d in background.docs) == len(BACKGROUND)
    tv = TopicVectors.build(SIEGE, fake_embedder())
    assert tv.example_heads.shape == tv.examples.shape and tv.counter_heads.shape == tv.counters.shape
    assert headline("Fighters close in\nthe town") == "Fighters close in" and headline("one line") == "one line"


def test_a_rare_name_is_strong_evidence_and_a_common_word_is_weak(background: Background) -> None:
    emb = fake_embedder()
    rare = keyword_evidence(TopicVectors.build(SIEGE, emb), background)
    common = keyword_evidence(TopicVectors.build(MARKETS, emb), background)
    # Four of five examples name the town, no background item does; "market" fires on every market report.
    assert rare.hit[0] > 4.0 and rare.hit[1] > 4.0
    assert 0.0 < common.hit[0] < rare.hit[0] - 2.0
    # Capitalized terms name the event: an article naming none of them loses evidence; a common word does not.
    assert rare.miss[0] < -0.5 and common.miss == (0.0, 0.0)


def test_an_article_naming_the_event_matches_even_when_worded_apart_from_the_examples(
        background: Background) -> None:
    emb = fake_embedder()
    c = Classifier(emb, background)
    c.set_topics([SIEGE])
    batch = c.classify([article("Vardenburg could be another massacre, observers warn"),
                        article("Observers warn of another massacre")])
    assert [m.article.title for m in batch.matches] == ["Vardenburg could be another massacre, observers warn"]
    m = batch.matches[0]
    assert m.evidence.keywords == ("Vardenburg",) and m.evidence.features["kw_logit"] > 4.0


@pytest.mark.parametrize(("title", "roundup"), [
    ("Morning Mail: Battle for Kobani, Afghan's forced deportation, AFP asked to investigate Morrison", True),
    ("Morning Mail: Isis, Ebola, mandatory detention is 'child abuse'", True),
    ("The week: Vardenburg convoy; strike at the port; a minister resigns", True),
    # Two stories, a quote, a live blog, a comma inside a number, a long clause: single stories.
    ("Morning Mail: US to bomb Isis in Syria, Pistorius awaits final verdict", False),
    ("Battle for Kobani: Isis bears down despite US air strikes and street clashes – as it happened", False),
    ("Kobani: 1,500 flee as fighting nears the border", False),
    ("Kobani: destroyed and riddled with unexploded bombs, but its residents dare to dream of a new start", False),
    ("A label far too long to be a newsletter's name here: one, two, three", False),
    ("Fighters close in on Vardenburg, the town is shelled, families flee", False),
])
def test_a_roundup_is_a_label_then_three_or_more_short_stories(title: str, roundup: bool) -> None:
    assert is_roundup(Doc.of(f"{title}\nThe summary, with commas, of the first story.")) is roundup


def test_a_roundup_naming_the_event_gets_no_keyword_evidence_but_keeps_its_similarity(
        background: Background) -> None:
    emb = fake_embedder()
    index = Classifier(emb, background).index_for([SIEGE])
    texts = ["Morning Mail: Vardenburg, train fares rise, a film prize", "Vardenburg, train fares rise, a film prize"]
    scores = index.score(emb.embed(texts), [Doc.of(t) for t in texts])
    feats = scores.features[:, 0]
    assert feats[:, FEATURES.index("kw_bool")].tolist() == [1.0, 1.0]
    assert feats[:, FEATURES.index("roundup")].tolist() == [1.0, 0.0]
    assert feats[0, FEATURES.index("kw_logit")] == 0.0 and feats[1, FEATURES.index("kw_logit")] > 4.0
    assert scores.scores[0, 0] < scores.scores[1, 0]


def test_an_article_in_a_language_the_model_does_not_read_keeps_its_keyword_evidence_unfaded(
        background: Background) -> None:
    emb = fake_embedder()
    c = Classifier(emb, background)
    english = c.index_for([SIEGE])
    emb.languages = frozenset({"en"})
    c._fitted.clear()
    reads_en = c.index_for([SIEGE])
    # Closer to the counter-example than to any example: in English the rule's evidence fades.
    text = "Vardenburg siege of Ostmark harbour ends, the blockade of Ostmark lifted"
    vec = emb.embed([text])
    faded = reads_en.score(vec, [Doc.of(text, "en")]).features[0, 0, FEATURES.index("kw_logit")]
    full = reads_en.score(vec, [Doc.of(text, "es")]).features[0, 0, FEATURES.index("kw_logit")]
    unknown = reads_en.score(vec, [Doc.of(text)]).features[0, 0, FEATURES.index("kw_logit")]
    any_model = english.score(vec, [Doc.of(text, "es")]).features[0, 0, FEATURES.index("kw_logit")]
    hit = reads_en.entries[0][1].keywords.hit[0]
    assert reads_en.languages == frozenset({"en"}) and english.languages is None
    assert faded < 0.5 * hit and full == pytest.approx(hit)
    # An article of unknown language, or any article when the model reads every language, is faded as before.
    assert unknown == pytest.approx(faded) and any_model == pytest.approx(faded)
    batch = c.classify([article(text).model_copy(update={"language": "es"}),
                        article(text).model_copy(update={"language": "en"})], index=reads_en)
    # The classifier hands each article's language to the scorer.
    got = batch.scores.features[:, 0, FEATURES.index("kw_logit")]
    assert got[0] == pytest.approx(full) and got[1] == pytest.approx(faded)


def test_eval_errors_say_when_a_roundup_or_an_unread_language_changed_the_keyword_evidence(
        background: Background) -> None:
    emb = fake_embedder()
    emb.languages = frozenset({"en"})
    c = Classifier(emb, background)
    lead = "Vardenburg siege of Ostmark harbour ends", "the blockade of Ostmark lifted"
    items = [Labelled("roundup", "Morning Mail: Vardenburg, train fares rise, a film prize", "", (), True),
             Labelled("es", *lead, ("siege",), True, "es"), Labelled("en", *lead, ("siege",), True, "en"),
             Labelled("plain", "Fighters close in on Vardenburg", "the town is shelled", ("siege",), True)]
    report = evaluate(c, [SIEGE], items, errors=True, shape="feed")
    by_id = {e.item_id: e for e in report.errors}
    # The bag-of-words similarity alone passes the roundup; its keywords added nothing, and the error says so.
    assert set(by_id) == {"roundup", "en"}
    assert by_id["roundup"].kind == "false alarm" and by_id["roundup"].roundup
    assert by_id["roundup"].keyword_logit == 0.0 and by_id["roundup"].keywords == ("Vardenburg",)
    # The same text in Spanish is caught (its evidence unfaded); in English it is a miss, faded to nothing.
    assert by_id["en"].kind == "miss" and not by_id["en"].unread and by_id["en"].language == "en"
    assert by_id["en"].keyword_logit < 0.5
    assert c.index_for([SIEGE]).unread([Doc.of("x", "es"), Doc.of("x", "en"), Doc.of("x")]).tolist() == [
        True, False, False]


def test_keyword_evidence_fades_when_a_counter_example_explains_the_article_better(background: Background) -> None:
    emb = fake_embedder()
    index = Classifier(emb, background).index_for([SIEGE])
    texts = ["Vardenburg siege of Ostmark harbour ends, the blockade of Ostmark lifted", "Vardenburg convoy"]
    scores = index.score(emb.embed(texts), [Doc.of(t) for t in texts])
    kw = scores.features[:, 0, FEATURES.index("kw_logit")]
    margin = scores.features[:, 0, FEATURES.index("margin")]
    assert margin[0] < 0 < margin[1]
    assert kw[0] < 0.5 * kw[1]


def test_a_desk_passes_only_each_articles_best_topic(background: Background) -> None:
    emb = fake_embedder()
    a = SIEGE.model_copy(update={"desk": "world"})
    b = Topic(id="relief", name="Relief for Vardenburg", description="aid convoys reach Vardenburg",
              examples=("Aid convoy reaches Vardenburg\nfood delivered", "Relief for Vardenburg refugees\nblankets"),
              include_any=("Vardenburg",), desk="world")
    c = Classifier(emb, background)
    c.set_topics([a, b])
    both = Classifier(emb, background)
    both.set_topics([a.model_copy(update={"desk": None}), b.model_copy(update={"desk": None})])
    arts = [article("Aid convoy reaches Vardenburg with food for refugees"), article("Reinforcements reach Vardenburg")]
    independent = {(m.article.title, m.topic_id) for m in both.classify(arts).matches}
    desk = c.classify(arts)
    assert len(independent) > len(desk.matches)
    per_article: dict[str, list[str]] = {}
    for m in desk.matches:
        per_article.setdefault(m.article.title, []).append(m.topic_id)
    assert all(len(v) == 1 for v in per_article.values())
    col = {t.id: i for i, t in enumerate(desk.index.topics)}
    for title, (tid,) in per_article.items():
        row = [x.title for x in arts].index(title)
        assert desk.scores.scores[row, col[tid]] == desk.scores.scores[row].max()


def test_fit_sets_aside_background_items_of_a_broad_topic_only_from_a_large_background() -> None:
    emb = fake_embedder(10_000)
    broad = Topic(id="shares", name="Stock market report", description="shares and the market moved",
                  examples=("market report today\nshares and the market moved", "market report\nshares rose",
                            "the market report\nshares fell"))
    big = Background.build(BACKGROUND, emb)
    small = Background.build(BACKGROUND[:40], emb)
    assert fit(TopicVectors.build(broad, emb), big).set_aside > 0
    assert fit(TopicVectors.build(broad, emb), small).set_aside == 0


def test_first_sentence_cuts_at_a_sentence_then_at_a_word() -> None:
    assert first_sentence("Quarterly profits jumped 76%. The firm said more.") == "Quarterly profits jumped 76%."
    assert first_sentence("  spaced\n\n out   text  ") == "spaced out text"
    long = "word " * 200
    cut = first_sentence(long)
    assert len(cut) <= FEED_SUMMARY_CHARS + 1 and cut.endswith("\u2026") and "wor\u2026" not in cut
    assert first_sentence("") == ""


def test_labelled_items_are_presented_in_each_shape() -> None:
    item = Labelled("x", "Grain prices rise", "Wheat rose 5% on Monday. Traders blamed the weather.", ("m",), True)
    full, feed, head = item.article("full"), item.article("feed"), item.article("headline")
    assert full.content and "Traders blamed" in full.text()
    assert feed.summary == "Wheat rose 5% on Monday." and feed.content is None
    assert head.text() == "Grain prices rise"
    with pytest.raises(ValueError, match="unknown shape 'tweet'"):
        item.article("tweet")


def test_evaluate_lists_misses_and_false_alarms_with_evidence(background: Background) -> None:
    emb = fake_embedder()
    c = Classifier(emb, background)
    items = [Labelled("1", "Reinforcements reach Vardenburg", "", ("siege",), True),
             Labelled("2", "Families flee the fighting", "", ("siege",), True),
             Labelled("3", "Vardenburg cheese festival opens", "", (), True),
             Labelled("4", "Heatwave news item", "", (), True)]
    report = evaluate(c, [SIEGE], items, shape="headline", errors=True)
    r = report.topics["siege"]
    assert r.positives == 2 and report.shape == "headline" and r.precision is not None
    tp = round(r.precision * r.predicted)
    misses = [e for e in report.errors if e.kind == "miss"]
    alarms = [e for e in report.errors if e.kind == "false alarm"]
    assert len(misses) == r.positives - tp and len(alarms) == r.predicted - tp
    assert misses or alarms  # "Families flee the fighting" shares no word with the topic
    for e in report.errors:
        assert e.topic_id == "siege" and e.closest and e.closest_kind in ("example", "description")
        assert (e.kind == "miss") == (e.item_id in {"1", "2"})
        assert e.counter_example is not None and e.counter_margin is not None
    out = report.to_json()
    assert out["shape"] == "headline" and len(out["errors"]) == len(report.errors)


def test_shipped_background_vectors_are_cached_per_model_and_a_bad_cache_is_ignored(tmp_path: Path) -> None:
    inner = BagOfWordsEmbedder()
    emb = CachedEmbedder(inner, 10)
    first = shipped_background(emb, tmp_path)
    assert len(first.vectors) == len(first.docs) > 1000 and len(inner.calls) >= 1
    calls = len(inner.calls)
    again = shipped_background(emb, tmp_path)
    assert len(inner.calls) == calls and np.allclose(again.vectors, first.vectors)
    for f in tmp_path.glob("*.npy"):
        f.write_bytes(b"not an array")
    shipped_background(emb, tmp_path)
    assert len(inner.calls) > calls


def test_background_keyword_features_agree_with_checking_each_article_on_its_own() -> None:
    topic = Topic(id="k", name="Keywords", include_any=("strike*", "rail union", "US", "Halep|Aleppo"),
                  include_all=("train*",), exclude=("model trains",))
    texts = ["Rail union strikes, trains halted", "Model trains exhibition: strikers welcome", "us trains strike",
             "US trains", "Trains to Halep resume", "TRAINS\nstrike", "nothing here", "trains of thought",
             "Çavuşoğlu trains strikers in Aleppo"]
    docs = [Doc.of(t) for t in texts]
    tv = TopicVectors.build(topic, fake_embedder())
    got = keyword_features(tv, docs)
    for i, doc in enumerate(docs):
        assert tuple(got[i, :3]) == tv.rules.check(doc).features(), texts[i]
        assert got[i, 3] == float(bool(tv.names.check(doc).any_hits)), texts[i]
        assert got[i, 4] == float(is_short(doc))


def test_desk_topics_learn_from_each_others_examples_and_refit_when_a_sibling_changes(
        background: Background) -> None:
    emb = fake_embedder()
    a = SIEGE.model_copy(update={"desk": "world"})
    b = MARKETS.model_copy(update={"desk": "world"})
    lone = Topic(id="lone", name="Lone", examples=("a lone example",))
    siblings = desk_siblings([a, b, lone])
    assert siblings == {"siege": MARKETS.examples, "markets": SIEGE.examples}
    c = Classifier(emb, background)
    index = c.index_for([a, b, lone])
    tv = index.entries[index.position("markets")][0]
    assert len(tv.counters) == len(SIEGE.examples) and tv.counter_of == SIEGE.examples
    texts = ["Grain market: wheat dearer at Vardenburg"]
    batch = c.classify([article(texts[0])], index=index)
    ev = index.evidence(batch.vectors[0], batch.docs[0], index.position("markets"), batch.scores, 0)
    assert ev.counter_example in SIEGE.examples
    changed = a.model_copy(update={"examples": (*a.examples, "Shelling of Vardenburg resumes\nguns")})
    again = c.index_for([changed, b, lone])
    assert again.entries[again.position("markets")][1] is not index.entries[index.position("markets")][1]
    assert again.entries[again.position("lone")][1] is index.entries[index.position("lone")][1]


def test_a_batchs_evidence_is_each_matchs_closest_text_counter_margin_and_fired_keywords(
        background: Background) -> None:
    """The batch path (one product per topic, each term looked up once per article) against a plain reference."""
    shared = Topic(id="shared", name="Vardenburg markets", description="the market of Vardenburg",
                   examples=("Vardenburg market reopens\nstalls", "Grain reaches Vardenburg market\ncarts"),
                   counter_examples=("Ostmark market closes\nstalls shut",), include_all=("Vardenburg",),
                   include_any=("market", "grain"), threshold=0.0)
    topics = [SIEGE.model_copy(update={"threshold": 0.0}), MARKETS.model_copy(update={"threshold": 0.0}), shared,
              Topic(id="bare", name="Bare", description="weather and storms", threshold=0.0)]
    c = Classifier(fake_embedder(), background)
    index = c.index_for(topics)
    titles = ["Grain market opens in besieged Vardenburg", "Storm floods the wheat market", "Defenders hold the town",
              "Vardenburg grain convoy arrives"]
    batch = c.classify([article(t, "a report") for t in titles], index=index)
    assert len(batch.matches) == len(titles) * len(topics)  # threshold 0: every pair is explained
    for m in batch.matches:
        row, col = titles.index(m.article.title), index.position(m.topic_id)
        tv, v, doc = index.entries[col][0], batch.vectors[row], batch.docs[row]
        pairs = zip(tv.examples, tv.topic.examples, strict=True)
        candidates = [(float(v @ tv.desc), m.topic_id)] + [(float(v @ e), t) for e, t in pairs]
        sim, closest = max(candidates, key=lambda x: x[0])  # the description wins ties
        ev = m.evidence
        assert ev.similarity == pytest.approx(sim, abs=1e-4)
        assert (ev.closest == closest) if closest in tv.topic.examples else ev.closest_kind == "description"
        if len(tv.counters):
            k = int(np.argmax(tv.counters @ v))
            assert ev.counter_example == tv.counter_of[k]
            assert ev.counter_margin == pytest.approx(sim - float(tv.counters[k] @ v), abs=1e-4)
        else:
            assert ev.counter_example is None and ev.counter_margin is None
        assert ev.keywords == (tv.rules.check(doc).fired if not tv.rules.empty else ())
        assert ev.features == {n: pytest.approx(x, abs=1e-4) for n, x in zip(FEATURES, batch.scores.features[row, col],
                                                                              strict=True)}
        assert ev == index.evidence(v, doc, col, batch.scores, row)  # the one-match path says the same
    assert batch.matches[0].evidence.keywords  # the rules fired somewhere: the check above is not vacuous
    assert any(m.evidence.keywords == ("Vardenburg", "market", "grain") for m in batch.matches)


def test_a_topic_without_examples_measures_its_keywords_on_its_description(background: Background) -> None:
    emb = fake_embedder()
    named = Topic(id="v", name="Vardenburg", description="the siege of the town of Vardenburg",
                  include_any=("Vardenburg",))
    ev = keyword_evidence(TopicVectors.build(named, emb), background)
    # The description fires the rule, so it counts as one example that does: (1 + s) / (1 + 2s) of positives.
    assert ev.miss[0] == pytest.approx(np.log(1 - 1.5 / 2), abs=0.01) and ev.miss[0] < np.log(0.5)
    unnamed = named.model_copy(update={"description": ""})
    bare = keyword_evidence(TopicVectors.build(unnamed, emb), background)
    assert bare.miss[0] == pytest.approx(np.log(0.5), abs=0.01)  # nothing to measure on: even odds
    assert ev.hit[0] == pytest.approx(bare.hit[0] + np.log(1.5), abs=1e-3)


def test_a_topic_without_counter_examples_counts_its_description_when_its_names_are_measured(
        background: Background) -> None:
    emb = fake_embedder()
    lone = Topic(id="v", name="Vardenburg", description="the siege of the town of Vardenburg",
                 examples=("Vardenburg shelled overnight", "Fighters hold Vardenburg", "Vardenburg civilians flee"),
                 include_any=("Vardenburg",))
    ev = keyword_evidence(TopicVectors.build(lone, emb), background)
    # Four samples name it (three examples and the description): (4 + s) / (4 + 2s) of the topic's reports do.
    assert ev.miss[0] == pytest.approx(np.log(1 - 4.5 / 5), abs=0.01)
    countered = lone.model_copy(update={"counter_examples": ("Vardenburg football club wins the cup",)})
    measured = keyword_evidence(TopicVectors.build(countered, emb), background)
    assert measured.miss[0] == pytest.approx(np.log(1 - 3.5 / 4), abs=0.01)  # the examples alone
    assert ev.hit == measured.hit  # what a firing rule is worth is measured on the examples either way
