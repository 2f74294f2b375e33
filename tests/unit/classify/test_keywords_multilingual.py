"""Keywords across diacritics, scripts and a name's spellings, in the per-topic rules and the shared index."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classify.topics import Doc, KeywordIndex, KeywordRules, Term, fold
from wirewatch.records import Topic

ALEPPO = "Aleppo|Alep|Halep|Halab|حلب"


def match(term: str, text: str) -> str | None:
    return Term(term).match(Doc.of(text))


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        ("Cavusoglu", "Çavuşoğlu meets Lavrov", True),  # diacritics folded on the text
        ("Çavuşoğlu", "Cavusoglu meets Lavrov", True),  # ... and on the term
        ("cavusoglu", "ÇAVUŞOĞLU MEETS LAVROV", True),  # lower-case term: any case
        ("Cavusoglu", "CAVUSOGLU MEETS LAVROV", False),  # a capital: that case, after folding
        ("Alep", "Le cessez-le-feu à Alep tient", True),
        ("alep", "ALEP : le cessez-le-feu tient", True),
        ("Alép", "les bus quittent Alep", True),
        ("Alep", "Aleppo truce", False),  # still whole words
        ("Diyarbakir", "Diyarbakır'da gösteri", True),  # dotless i spelled plain
        ("istanbul", "İSTANBUL'DA YAĞMUR", True),
        ("Halep", "Halep'te ateşkes ikinci gününde", True),  # Turkish suffix after an apostrophe
        ("evacuat*", "Évacuations à Alep", True),  # prefix after folding
        ("strasse", "Sperrung: die Straße ist zu", True),
        ("final", "the ﬁnal convoy", True),  # compatibility ligature
        ("truce", "a\u00a0truce holds", True),
        ("east Aleppo", "east\u00a0Aleppo", True),  # a no-break space separates a phrase too
        ("حلب", "وقف إطلاق النار في حلب", True),  # Arabic, whole word
        ("حلب", "وقف إطلاق النار في حَلَب", True),  # vowel marks folded
        ("حلب", "عاد إلى وحلب", False),  # an attached conjunction makes another word: list it as a spelling
        ("أحمد", "قال احمد", True),  # hamza seat folded
        ("آتش‌بس", "آتش‌بس در حلب برقرار است", True),  # Persian with a zero-width non-joiner
        ("Алеппо", "Перемирие в Алеппо соблюдается", True),  # Cyrillic
        ("алеппо", "ПЕРЕМИРИЕ В АЛЕППО", True),
        ("Алеппо", "Алеппская операция", False),
        ("алепп*", "Алеппская операция", True),
        ("ёлка", "Елка на площади", True),
        ("αθήνα", "ΑΘΗΝΑ: απεργία", True),  # Greek, accents and case
        ("Zürich", "Zurich airport", True),
        ("US", "US envoy arrives", True),
        ("US", "let us talk", False),
    ],
)
def test_terms_match_across_diacritics_scripts_and_case(term: str, text: str, expected: bool) -> None:
    assert (match(term, text) is not None) is expected


def test_decomposed_text_matches_a_composed_term() -> None:
    nfd = unicodedata.normalize("NFD", "Çavuşoğlu a Alep")
    assert match("Çavuşoğlu", nfd) == "Çavuşoğlu"
    assert match("Alep", nfd) == "Alep"
    assert Doc.of(nfd).words == {"Cavusoglu", "a", "Alep"}  # marks no longer split words


@pytest.mark.parametrize(
    ("text", "spelling"),
    [
        ("Aleppo ceasefire holds", "Aleppo"),
        ("Le cessez-le-feu tient à Alep", "Alep"),
        ("Halep'te ateşkes sürüyor", "Halep"),
        ("Truce in Halab", "Halab"),
        ("وقف إطلاق النار في حلب", "حلب"),
        ("Alep and Aleppo", "Aleppo"),  # several fire: the first as written
    ],
)
def test_spellings_of_a_name_are_one_term_and_the_evidence_names_the_one_found(text: str, spelling: str) -> None:
    assert match(ALEPPO, text) == spelling


def test_spellings_each_keep_their_own_case_and_prefix_rules() -> None:
    term = Term("Halab|evacuat*|UN")
    assert [s.raw for s in term.spellings] == ["Halab", "evacuat*", "UN"]
    assert term.match(Doc.of("EVACUATIONS resume")) == "evacuat*"
    assert term.match(Doc.of("un convoy")) is None
    assert term.match(Doc.of("halab")) is None


def test_spellings_in_include_all_mean_any_of_them() -> None:
    truce = "ceasefire|cessez-le-feu|ateşkes|وقف إطلاق النار"
    rules = KeywordRules(Topic(id="t", name="T", include_all=(ALEPPO, truce), include_any=("bus*|otobüs*|حافلات",)))
    fr = rules.check(Doc.of("Alep : le cessez-le-feu tient, les bus attendent"))
    assert fr.boolean and fr.all_hits == ("Alep", "cessez-le-feu") and fr.fired == ("Alep", "cessez-le-feu", "bus*")
    tr = rules.check(Doc.of("Halep'te ateskes sürüyor, otobüsler bekliyor"))
    assert tr.boolean and tr.fired == ("Halep", "ateşkes", "otobüs*")
    ar = rules.check(Doc.of("وقف إطلاق النار صامد في حلب"))
    assert ar.all_hits == ("حلب", "وقف إطلاق النار") and ar.features() == (0.0, 0.0, 1.0)
    assert rules.check(Doc.of("Homs ceasefire holds")).all_hits == ("ceasefire",)


def test_exclude_with_spellings_vetoes_on_any() -> None:
    rules = KeywordRules(Topic(id="t", name="T", include_any=("truce",), exclude=("pepper|biber",)))
    hit = rules.check(Doc.of("Truce, but biber prices soar"))
    assert hit.excluded == ("biber",) and not hit.boolean


@pytest.mark.parametrize("raw", ["Aleppo||Alep", "|", "Alep|", "Alep|**"])
def test_a_spelling_without_word_characters_is_rejected_with_the_term(raw: str) -> None:
    with pytest.raises(ValueError, match="spelling .* has no word characters"):
        Term(raw)


def test_the_example_aleppo_topic_lists_the_citys_spellings() -> None:
    from pathlib import Path

    from classify.topics import load_topic_file

    (topic,) = load_topic_file(Path(__file__).resolve().parents[3] / "examples" / "aleppo" / "topics.toml")
    (city,) = topic.include_all  # one term: the city by any of its names
    assert set(ALEPPO.split("|")) <= set(city.split("|"))
    rules = KeywordRules(topic)
    assert rules.check(Doc.of("Halep'te tahliye başladı")).all_hits == ("Halep",)
    assert rules.check(Doc.of("بدء إجلاء المدنيين من حلب")).all_hits == ("حلب",)


# -- properties ----------------------------------------------------------------------------------------
MARKS = st.sampled_from(["\u0301", "\u0300", "\u0308", "\u0327", "\u0306", "\u030c", "\u064e", "\u0650"])
LETTERS = st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFGHZ") + list("абвгдежзАБВГ") + list("حلبوقف"))


@given(st.text(max_size=60))
def test_fold_is_idempotent_and_leaves_no_combining_marks(text: str) -> None:
    once = fold(text)
    assert fold(once) == once
    assert not any(unicodedata.combining(c) for c in once)


@st.composite
def word_with_marks(draw: st.DrawFn) -> tuple[str, str]:
    """A plain word and the same word with combining marks sprinkled after its letters."""
    letters = draw(st.lists(LETTERS, min_size=1, max_size=8))
    marked = "".join(c + "".join(draw(st.lists(MARKS, max_size=2))) for c in letters)
    return "".join(letters), marked


@given(word_with_marks(), st.booleans())
def test_a_word_matches_itself_with_any_diacritics_on_either_side(pair: tuple[str, str], term_marked: bool) -> None:
    plain, marked = pair
    term, text = (marked, plain) if term_marked else (plain, marked)
    assert match(term, f"before {text}, after") is not None
    assert match(term.lower(), f"BEFORE {text.upper()} AFTER") is not None


VOCAB = ["Aleppo", "aleppo", "Alep", "Alép", "Halep", "halab", "حلب", "وحلب", "حَلَب", "Çavuşoğlu", "cavusoglu",
         "CAVUSOGLU", "Алеппо", "АЛЕППО", "ateşkes", "ateskes", "truce", "Truces", "US", "us", "cessez-le-feu",
         "évacuation", "evacuations", "straße", "Strasse", "east", "ﬁnal"]
TERMS = st.one_of(
    st.sampled_from(VOCAB),
    st.sampled_from(VOCAB).map(lambda w: w.rstrip("-") + "*"),
    st.lists(st.sampled_from(VOCAB), min_size=2, max_size=2).map(" ".join),
    st.lists(st.sampled_from(VOCAB), min_size=2, max_size=4).map("|".join),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({"include_all": st.lists(TERMS, max_size=2),
                                       "include_any": st.lists(TERMS, max_size=3),
                                       "exclude": st.lists(TERMS, max_size=1)}), min_size=1, max_size=4),
       st.lists(st.lists(st.sampled_from([*VOCAB, "and", "in", ",", "."]), max_size=10).map(" ".join), max_size=5))
def test_keyword_index_agrees_with_each_topics_rules(topics: list[dict[str, list[str]]], texts: list[str]) -> None:
    rules = [KeywordRules(Topic(id=f"t{i}", name="T", **{k: tuple(v) for k, v in t.items()}))
             for i, t in enumerate(topics)]
    docs = [Doc.of(t) for t in texts]
    feats, excluded = KeywordIndex(rules).features(docs)
    for i, doc in enumerate(docs):
        for col, r in enumerate(rules):
            hits = r.check(doc)
            assert tuple(feats[i, col]) == hits.features(), (texts[i], topics[col])
            assert bool(excluded[i, col]) == bool(hits.excluded), (texts[i], topics[col])
