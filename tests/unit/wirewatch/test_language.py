"""Language codes: declared values normalized, undeclared text detected (on headlines written for these tests)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirewatch.language import detect, normalize_language

HEADLINES = {
    "en": "Ceasefire in Aleppo holds for a second day as buses wait at the crossing",
    "fr": "Le cessez-le-feu à Alep tient pour le deuxième jour",
    "de": "Waffenruhe in Aleppo hält den zweiten Tag",
    "es": "Llegan autobuses para evacuar a civiles del este de Alepo",
    "it": "Regge per il secondo giorno la tregua ad Aleppo",
    "tr": "Halep'te ateşkes ikinci gününde de sürüyor",
    "ar": "وصول حافلات لإجلاء المدنيين من شرق حلب",
    "ru": "Перемирие в Алеппо соблюдается второй день",
    "fa": "اتوبوس‌ها برای تخلیه غیرنظامیان از شرق حلب رسیدند",
    "pl": "W Genewie wznowiono rozmowy o rozejmie",
}


@pytest.mark.parametrize("lang", sorted(HEADLINES))
def test_detects_the_language_of_a_headline(lang: str) -> None:
    assert detect(HEADLINES[lang]) == lang


@pytest.mark.parametrize("text", ["", "   ", "OK", "5G", "2024-05-01 12:00", "<p></p>", "!!!", "..."])
def test_too_little_text_is_none(text: str) -> None:
    assert detect(text) is None


def test_whitespace_and_length_do_not_matter() -> None:
    text = HEADLINES["de"]
    assert detect(f"\n {text}\n\t") == "de"
    assert detect(" ".join([text] * 200)) == "de"


@given(st.text(max_size=400))
def test_detect_never_raises_and_returns_a_two_letter_code(text: str) -> None:
    code = detect(text)
    assert code is None or (len(code) == 2 and code.isascii() and code.islower())


@pytest.mark.parametrize(("value", "code"), [
    ("en", "en"), ("EN", "en"), ("en-US", "en"), ("fr_FR", "fr"), (" de-AT ", "de"), ("zh-Hant-TW", "zh"),
    ("pt-br", "pt"), ("de, en", "de"), ("eng", "en"), ("fra", "fr"), ("ger", "de"), ("English", "en"),
    ("iw", "he"), ("ara", "ar"),
])
def test_normalize_language(value: str, code: str) -> None:
    assert normalize_language(value) == code


@pytest.mark.parametrize("value", [None, "", "  ", "*", "und", "mul", "x-default", "qqq", "123", 42, "-en"])
def test_normalize_language_unknown_is_none(value: object) -> None:
    assert normalize_language(value) is None


@given(st.sampled_from(["en", "fr", "de", "ar"]), st.sampled_from(["", "-US", "_FR", "-latn-RS", "-419"]),
       st.booleans())
def test_normalize_language_keeps_the_primary_subtag(lang: str, region: str, upper: bool) -> None:
    value = lang + region
    assert normalize_language(value.upper() if upper else value) == lang
