"""Keyword rules (whole words, case aware, phrases, prefixes), topic files and feedback versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from classify.topics import Doc, KeywordRules, Term, TopicFileError, apply_feedback, dump_topics, load_topic_file
from wirewatch.records import Topic

ROOT = Path(__file__).resolve().parents[3]


def found(term: str, text: str) -> bool:
    return Term(term).found(Doc.of(text))


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        ("truce", "A truce was agreed.", True),
        ("truce", "TRUCE AGREED", True),  # lower-case term: any case
        ("truce", "truces were agreed", False),  # whole words only
        ("truce*", "truces were agreed", True),  # explicit prefix
        ("evacuat*", "Evacuations resume", True),
        ("US", "US envoy arrives", True),
        ("US", "let us talk", False),  # a capital in the term: that case exactly
        ("AI", "said the AI model", True),
        ("AI", "a paid plan", False),
        ("cease-fire", "a cease-fire holds", True),
        ("cease-fire", "cease fire holds", False),
        ("east Aleppo", "rebels in east   Aleppo", True),  # phrases tolerate extra spaces
        ("east Aleppo", "east of Aleppo", False),
        ("Aleppo", "Aleppo's old city", True),
        ("Aleppo", "Aleppos", False),
    ],
)
def test_term_matches_whole_words_case_aware(term: str, text: str, expected: bool) -> None:
    assert found(term, text) is expected


def test_term_without_word_characters_is_rejected_with_its_text() -> None:
    with pytest.raises(ValueError, match="'\\*\\*'"):
        Term("**")


def test_rules_boolean_needs_all_of_include_all_one_of_include_any_and_no_exclude() -> None:
    topic = Topic(id="t", name="T", include_all=("Aleppo",), include_any=("ceasefire", "truce"), exclude=("pepper",))
    rules = KeywordRules(topic)
    hit = rules.check(Doc.of("Aleppo truce holds"))
    assert hit.boolean and hit.fired == ("Aleppo", "truce") and hit.features() == (1.0, 1.0, 1.0)
    assert not rules.check(Doc.of("Homs truce holds")).boolean
    assert not rules.check(Doc.of("Aleppo citadel reopens")).boolean
    vetoed = rules.check(Doc.of("Aleppo truce over pepper exports"))
    assert vetoed.excluded == ("pepper",) and not vetoed.boolean


def test_rules_without_include_terms_never_fire_boolean() -> None:
    rules = KeywordRules(Topic(id="t", name="T", exclude=("sport",)))
    assert not rules.empty
    assert not rules.check(Doc.of("anything at all")).boolean


def test_topic_file_round_trips_through_dump(tmp_path: Path) -> None:
    topics = load_topic_file(ROOT / "examples" / "aleppo" / "topics.toml")
    again = tmp_path / "t.toml"
    again.write_text(dump_topics(topics))
    assert load_topic_file(again) == topics


def test_topic_file_accepts_config_layout(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[[classify.topics]]\nid = "x"\nname = "X"\n')
    assert [t.id for t in load_topic_file(f)] == ["x"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not = [toml", "not valid TOML"),
        ("[other]\na = 1\n", "no \\[\\[topics\\]\\]"),
        ('[[topics]]\nid = "Bad Id"\nname = "X"\n', "topic #1 \\(Bad Id\\)"),
        ('[[topics]]\nid = "x"\nname = "X"\ninclude_any = ["!!"]\n', "no word characters"),
    ],
)
def test_bad_topic_file_gets_an_error_naming_file_and_entry(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(content)
    with pytest.raises(TopicFileError, match=message):
        load_topic_file(f)


def test_missing_topic_file_is_named() -> None:
    with pytest.raises(TopicFileError, match="not found: /nonexistent.toml"):
        load_topic_file(Path("/nonexistent.toml"))


def test_feedback_adds_example_or_counter_example_as_a_new_version() -> None:
    topic = Topic(id="t", name="T", examples=("a",), counter_examples=("b",), version=3)
    relevant = apply_feedback(topic, "  new story ", relevant=True)
    assert relevant.examples == ("a", "new story") and relevant.version == 4 and relevant.updated_at is not None
    moved = apply_feedback(relevant, "new story", relevant=False)
    assert moved.examples == ("a",) and moved.counter_examples == ("b", "new story") and moved.version == 5


def test_empty_feedback_text_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        apply_feedback(Topic(id="t", name="T"), "   ", relevant=True)


def test_keyword_index_agrees_with_each_topics_rules() -> None:
    from classify.topics import KeywordIndex

    topics = [
        Topic(id="a", name="A", include_all=("Aleppo",), include_any=("ceasefire", "truce*", "east Aleppo")),
        Topic(id="b", name="B", include_any=("US", "rates"), exclude=("pepper",)),
        Topic(id="c", name="C"),
        Topic(id="d", name="D", include_all=("bank", "interest rate*"), exclude=("Aleppo pepper",)),
        Topic(id="e", name="E", include_any=("truce*",)),  # a term shared with topic a
    ]
    docs = [Doc.of(t) for t in (
        "Aleppo truces in east Aleppo", "us rates rise", "US bank raises interest rates", "Aleppo pepper prices",
        "Bank holds interest rate; Aleppo pepper exports", "nothing here", "",
    )]
    rules = [KeywordRules(t) for t in topics]
    feats, excluded = KeywordIndex(rules).features(docs)
    for i, doc in enumerate(docs):
        for col, r in enumerate(rules):
            hits = r.check(doc)
            assert tuple(feats[i, col]) == hits.features(), (i, col)
            assert bool(excluded[i, col]) == bool(hits.excluded), (i, col)
