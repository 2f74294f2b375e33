"""Text fingerprints and the same-story similarity, on small texts that carry their own expectation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from alerts.evaluate import PairsError, evaluate, prf, read_pairs
from alerts.fingerprint import Print, name_conflict, resemblance, similarity


@given(st.text(min_size=0, max_size=200))
@example("AA\u03000")  # a combining mark splits the word differently for names and for words
def test_a_text_resembles_itself_fully(text: str) -> None:
    p = Print.of(text)
    assert resemblance(p.signature, p.signature) == 1.0
    assert similarity(p, p, None) == 1.0


@pytest.mark.parametrize(("a", "b", "conflict"), [
    ("Evacuation of Aleppo begins", "Evacuation of Daraya begins", True),
    ("Syrian rebels agree ceasefire in Deraa", "Syria: ceasefire agreed in Deraa", False),  # stems match
    ("Ceasefire agreed in Deraa", "Reuters: ceasefire agreed in Deraa", False),  # one side adds a name only
    ("Monday: talks resume", "Tuesday: talks resume", False),  # weekdays are not names
    # a capitalized word opening a headline or a sentence is wording, not a name ...
    ("Thousands wait in the cold to leave Aleppo", "Families gather at crossings in east Aleppo", False),
    ("Evacuation convoys roll out of Aleppo. Fighting paused", "Buses leave Aleppo. Ambulances followed", False),
    # ... unless it is a kicker before a colon, an acronym, or capitalized elsewhere in the text
    ("Homs: market reopens after repairs", "Hama: market reopens after repairs", True),
    ("UNHCR says convoy delayed", "ICRC says convoy delayed", True),
    ("Daraya families leave. Buses left Daraya", "Moadamiya families leave. Buses left Moadamiya", True),
])
def test_name_conflict(a: str, b: str, conflict: bool) -> None:
    assert name_conflict(Print.of(a), Print.of(b)) is conflict


def test_conflicting_names_outweigh_shared_template_wording() -> None:
    a, b = Print.of("Car bomb kills 12 in Aleppo market"), Print.of("Car bomb kills 12 in Idlib market")
    assert similarity(a, b, None) < 0.75
    assert similarity(a, b, 0.72) < 0.75
    same = Print.of("Car bomb kills 12 in Aleppo market, officials say")
    assert similarity(a, same, None) >= 0.75


def test_prf_and_best_threshold() -> None:
    scores = np.array([0.9, 0.8, 0.6, 0.3])
    labels = np.array([True, True, False, True])
    assert prf(scores, labels, 0.7) == (1.0, 2 / 3, 0.8)
    r = evaluate(scores, labels, 0.7)
    assert r.best_f1 >= r.f1 and r.pairs == 4 and r.best_threshold == 0.3


def test_read_pairs_rejects_bad_lines_naming_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.jsonl"
    f.write_text('{"a": "x", "b": "y", "is_duplicate": "yes"}\n')
    with pytest.raises(PairsError, match="p.jsonl:1"):
        read_pairs(f)
    f.write_text("not json\n")
    with pytest.raises(PairsError, match="p.jsonl:1: not JSON"):
        read_pairs(f)
    f.write_text("\n")
    with pytest.raises(PairsError, match="no pairs"):
        read_pairs(f)
