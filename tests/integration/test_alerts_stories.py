"""Story folding against the real Redis, with real all-MiniLM-L6-v2 vectors (as classify ships them)."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from alerts.embed import Embedder
from alerts.stories import StoryFolder
from tests.integration.alerts_support import match
from wirewatch import demo, state
from wirewatch.records import Match
from wirewatch.settings import Settings

# Test receivers listen on loopback, which the SSRF guard refuses unless the operator allows it.
LOOPBACK = {"url_allowlist": ["127.0.0.1"]}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ALEPPO = [
    ("Reuters", "Evacuation of eastern Aleppo begins as first buses carry civilians and rebels out",
     "The first convoy of buses and ambulances left eastern Aleppo on Thursday under a ceasefire deal, "
     "carrying wounded civilians and fighters toward rebel-held Idlib."),
    ("Al Jazeera", "Evacuation of eastern Aleppo begins as first buses carry civilians and rebels out",
     "The first convoy of buses and ambulances left eastern Aleppo on Thursday under a ceasefire deal, "
     "carrying wounded civilians and fighters toward rebel-held Idlib."),
    ("The Guardian", "First buses leave eastern Aleppo as evacuation of civilians and rebels begins",
     "A convoy of buses and ambulances left eastern Aleppo on Thursday under a ceasefire agreement, "
     "carrying wounded civilians and fighters to rebel-held Idlib province."),
    ("BBC", "Aleppo evacuation: first convoy leaves besieged east of the city",
     "Buses and ambulances carrying wounded civilians and fighters left eastern Aleppo on Thursday, "
     "heading for Idlib under a ceasefire deal."),
]
DARAYA = [
    ("Reuters", "Evacuation of Daraya begins as buses carry civilians and rebels out of besieged town",
     "Buses left Daraya on Friday under a deal with the government, ending a four-year siege of the town "
     "south-west of Damascus; fighters were taken to Idlib."),
    ("AFP", "Syrian rebels and civilians begin leaving Daraya after four-year siege",
     "Buses left Daraya on Friday under a deal with the government, ending a four-year siege of the town "
     "south-west of Damascus; fighters were taken to Idlib."),
]


@pytest.fixture(scope="module")
def embed() -> Callable[[str, list[tuple[str, str, str]]], list[Match]]:
    model = Embedder()

    def build(prefix: str, rows: list[tuple[str, str, str]]) -> list[Match]:
        vecs = model.embed([f"{t}\n{s}" for _, t, s in rows])
        return [match(f"{prefix}{i}", t, s, source=src, vector=tuple(float(x) for x in v))
                for i, ((src, t, s), v) in enumerate(zip(rows, vecs, strict=True))]

    return build


def _folder(make_settings: Callable[..., Settings], **alerts: object) -> StoryFolder:
    s = make_settings(api=LOOPBACK, alerts=alerts)
    return StoryFolder(state.connect(s), s)


def test_same_wire_copy_from_several_outlets_folds_into_one_story(make_settings, embed) -> None:  # type: ignore[no-untyped-def]
    folded = _folder(make_settings).fold(embed("al", ALEPPO))
    ids = {f.story.id for f in folded}
    print("aleppo versions -> stories:", len(ids), "similarities:", [round(f.similarity, 3) for f in folded])
    assert len(ids) == 1
    assert [f.new_story for f in folded] == [True, False, False, False]
    story = folded[-1].story
    assert story.article_count == 4 and set(story.sources) == {"Reuters", "Al Jazeera", "The Guardian", "BBC"}


def test_aleppo_and_daraya_evacuations_stay_apart(make_settings, embed) -> None:  # type: ignore[no-untyped-def]
    folder = _folder(make_settings)
    a = folder.fold(embed("al", ALEPPO[:2]))
    d = folder.fold(embed("da", DARAYA))
    print("aleppo->daraya similarity:", round(d[0].similarity, 3))
    assert len({f.story.id for f in a}) == 1 and len({f.story.id for f in d}) == 1
    assert a[0].story.id != d[0].story.id
    listed = folder.list("syria")
    assert {s.id for s in listed} == {a[0].story.id, d[0].story.id}


def test_a_redelivered_article_gets_its_story_back_unchanged(make_settings, embed) -> None:  # type: ignore[no-untyped-def]
    folder = _folder(make_settings)
    matches = embed("al", ALEPPO)
    first = folder.fold(matches)
    again = _folder_like(folder).fold(matches[1:2])
    assert again[0].replay and again[0].story.id == first[0].story.id
    assert again[0].story.article_count == 4  # nothing added twice


def _folder_like(folder: StoryFolder) -> StoryFolder:
    return StoryFolder(folder._r, folder._s)


def test_two_workers_fold_into_the_same_story(make_settings, embed) -> None:  # type: ignore[no-untyped-def]
    one = _folder(make_settings)
    two = _folder_like(one)  # another process: its own in-memory index, the same Redis
    matches = embed("al", ALEPPO)
    a = one.fold(matches[:1])
    b = two.fold(matches[1:3])
    c = one.fold(matches[3:])
    assert {f.story.id for f in a + b + c} == {a[0].story.id}
    assert c[0].story.article_count == 4


def test_republished_copy_folds_on_text_alone_without_vectors(make_settings) -> None:  # type: ignore[no-untyped-def]
    folder = _folder(make_settings)
    rows = [match(f"x{i}", t, s, source=src) for i, (src, t, s) in enumerate(ALEPPO[:2] + DARAYA[:1])]
    folded = folder.fold(rows)
    assert folded[0].story.id == folded[1].story.id != folded[2].story.id


def test_stories_older_than_the_window_are_not_folded_into(make_settings, embed) -> None:  # type: ignore[no-untyped-def]
    folder = _folder(make_settings, story_window_s=1)
    matches = embed("al", ALEPPO[:2])
    first = folder.fold(matches[:1])
    assert folder.cached == 1
    time.sleep(1.2)
    later = folder.fold(matches[1:])
    assert later[0].new_story and later[0].story.id != first[0].story.id
    assert folder.cached == 1  # the closed story left the local cache too: it only held memory


def test_a_rising_toll_is_a_material_development_a_retitle_is_not(make_settings, embed) -> None:  # type: ignore[no-untyped-def]
    folder = _folder(make_settings)
    rows = ALEPPO[:1] + [
        ("AP", "Evacuation of eastern Aleppo begins as first buses carry 3,000 civilians and rebels out",
         ALEPPO[0][2]),
        ("BBC", ALEPPO[3][1], ALEPPO[3][2]),
    ]
    folded = folder.fold(embed("al", rows))
    assert len({f.story.id for f in folded}) == 1
    assert [f.material for f in folded] == [False, True, False]


@pytest.mark.parametrize(("a", "b"), [
    ("Homs: market reopens after repairs", "Hama: market reopens after repairs"),
    ("Earthquake of magnitude 5.8 hits Homs", "Earthquake of magnitude 5.8 hits Hama"),
    ("Car bomb kills 12 in Aleppo market", "Car bomb kills 12 in Idlib market"),
])
def test_template_headlines_about_different_towns_stay_apart(make_settings, embed, a: str, b: str) -> None:  # type: ignore[no-untyped-def]
    folded = _folder(make_settings).fold(embed("t", [("A", a, ""), ("B", b, "")]))
    assert folded[1].new_story, f"folded at similarity {folded[1].similarity:.3f}"


def test_differently_worded_reports_of_one_event_fold_and_other_events_stay_apart(make_settings, embed) -> None:  # type: ignore[no-untyped-def]
    """The demo's articles say what each should become: seven outlets' reports of the Aleppo evacuation
    (copies, retitles and independently written ones) are one story; the Daraya evacuation and the Aleppo
    citadel restoration are not part of it."""
    data = tomllib.loads((Path(demo.__file__).parent / "data" / "articles.toml").read_text())
    items = [i for i in data["item"] if i["expect"] in ("aleppo", "daraya") or "aleppo" in i["slug"]]
    items.sort(key=lambda i: i["at"])
    folded = _folder(make_settings).fold(embed("demo", [(i["outlet"], i["title"], i["summary"]) for i in items]))
    story_of: dict[str, set[str]] = {}
    for item, f in zip(items, folded, strict=True):
        story_of.setdefault(item["expect"] if item["expect"] != "other" else item["slug"], set()).add(f.story.id)
    print({k: len(v) for k, v in story_of.items()}, [round(f.similarity, 2) for f in folded])
    assert len(story_of["aleppo"]) == 1 and len(story_of["daraya"]) == 1
    assert story_of["aleppo"] != story_of["daraya"]
    assert story_of["aleppo-citadel-restoration"].isdisjoint(story_of["aleppo"])
    aleppo = next(f.story for item, f in zip(items, folded, strict=True) if item["expect"] == "aleppo")
    assert len(set(next(f.story for f in reversed(folded) if f.story.id == aleppo.id).sources)) >= 4
