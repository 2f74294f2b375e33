"""The static first pass: what it lets through, what it vetoes, the worker hook, and the distilled model's cache.

A bag-of-words embedder stands in for the static model (the distilled one takes minutes to build); the cache
test writes a tiny model2vec model of its own instead of distilling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from classify_fakes import BagOfWordsEmbedder, fake_embedder
from test_classify_handler import ListProducer, consumed

from classify import prefilter
from classify.background import Background
from classify.classifier import Classifier
from classify.embedder import PACKAGED_MODEL, model_revision, resolve_model_path
from classify.prefilter import FirstPass
from classify.worker import Handler
from wirewatch.records import Match, Topic, decode
from wirewatch.settings import load_settings

WORDS = ("stock market bank rates court film prize phone vaccine election museum storm power cup final league goal "
         "song album concert budget tax school teacher hospital doctor weather snow flood police arrest fire bridge "
         "road airport flight hotel price oil gas farm crop").split()
BACKGROUND = [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(4)) for i in range(60)]
TOPICS = [
    Topic(id="rail", name="Rail strikes", description="rail workers strike trains cancelled",
          examples=("rail strike cancels trains", "train drivers strike over pay")),
    Topic(id="quake", name="Earthquakes", description="earthquake shakes city buildings collapse",
          examples=("earthquake shakes capital", "buildings collapse after quake"), include_any=("Richter",),
          exclude=("drill",)),
]


def classifier() -> Classifier:
    emb = fake_embedder()
    c = Classifier(emb, Background.build(BACKGROUND, emb))
    c.set_topics(TOPICS)
    return c


def first_pass(slack: float = prefilter.SLACK, static: Any = None) -> FirstPass:
    static = static or BagOfWordsEmbedder()
    return FirstPass(static, slack=slack, background=Background.build(BACKGROUND, static))


def test_near_articles_go_on_and_far_ones_skip() -> None:
    c, fp = classifier(), first_pass(slack=0.0)
    keep = fp.keep(["rail strike cancels trains across the north", "cup final won on penalties"], c.index)
    assert keep.tolist() == [True, False]


def test_keyword_evidence_counts_and_exclude_vetoes() -> None:
    c, fp = classifier(), first_pass(slack=0.0)
    # The static similarity alone is far, but the topic's own keyword rule fires.
    quake = c.index.position("quake")
    with_rule, far = fp.scores(["Richter reading of seven", "reading of seven"], c.index.topics)[0][:, quake]
    assert with_rule > far
    scores, excluded = fp.scores(["earthquake shakes capital in a drill"], c.index.topics)
    assert excluded[0, quake] and scores[0, quake] == 0.0  # "drill" vetoes the quake topic


def test_more_slack_never_skips_more() -> None:
    c = classifier()
    texts = [*BACKGROUND[:20], "rail strike cancels trains", "earthquake shakes capital", "union calls rail strike"]
    kept = [int(first_pass(m).keep(texts, c.index).sum()) for m in (0.0, 1.0, 3.0, 6.0)]
    assert kept == sorted(kept) and kept[-1] > kept[0]


class OtherWords(BagOfWordsEmbedder):
    """A static model that reads texts differently from the full one: every word has another direction."""

    def _word(self, word: str) -> Any:
        return super()._word(word + "\x00other")


def test_a_static_model_that_disagrees_gets_a_wider_margin() -> None:
    c = classifier()
    agreeing = first_pass(static=BagOfWordsEmbedder()).gaps(c.index)
    assert np.allclose(agreeing, 0.0, atol=1e-6)  # the same reading as the full model: nothing to allow for
    disagreeing = first_pass(static=OtherWords()).gaps(c.index)
    assert (disagreeing > agreeing).all()


def test_no_topics_means_nothing_goes_on() -> None:
    emb = fake_embedder()
    c = Classifier(emb, Background.build(BACKGROUND, emb))
    assert first_pass().keep(["rail strike"], c.index).tolist() == [False]
    assert first_pass().keep([], classifier().index).shape == (0,)


def test_topic_changes_are_followed() -> None:
    c, fp = classifier(), first_pass()
    first = fp.index_for(c.index.topics)
    assert fp.index_for(list(c.index.topics)) is first  # same definitions: not refitted
    c.set_topics(TOPICS[:1])
    assert [t.id for t in fp.index_for(c.index.topics).topics] == ["rail"]


def test_the_worker_classifies_and_remembers_only_what_goes_on() -> None:
    c = classifier()

    class Remember:
        def __init__(self) -> None:
            self.added: list[str] = []

        def add(self, articles: Any, vectors: Any) -> bool:
            assert len(articles) == len(vectors)
            self.added += [a.id for a in articles]
            return True

    recent, p = Remember(), ListProducer()
    h = Handler(load_settings(None), c, p, recent, first_pass(slack=0.0))  # type: ignore[arg-type]
    h([consumed(1, "Rail strike: train drivers strike over pay"), consumed(2, "Cup final won on penalties")])
    assert recent.added == ["id-1"]
    assert {decode(Match, o.value).topic_id for o in p.sent} == {"rail"}
    # Everything skipped: nothing classified, nothing produced, no error.
    p.sent.clear()
    h([consumed(3, "Museum opens its doors")])
    assert p.sent == [] and recent.added == ["id-1"]


def test_the_distilled_model_is_built_once_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model2vec
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    built: list[Path] = []

    def tiny(path: Path, target: Path, pca_dims: int) -> None:
        words = ["[UNK]", "rail", "strike", "quake"]
        tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
        tok.pre_tokenizer = Whitespace()
        vectors = np.random.default_rng(0).standard_normal((len(words), 8)).astype(np.float32)
        model2vec.StaticModel(vectors, tok).save_pretrained(target)
        built.append(target)

    monkeypatch.setattr(prefilter, "_distill", tiny)
    first = prefilter.distilled(cache_dir=tmp_path)
    again = prefilter.distilled(cache_dir=tmp_path)
    assert len(built) == 1 and built[0].parent == tmp_path
    assert built[0].name.startswith(model_revision(resolve_model_path(PACKAGED_MODEL)))
    v = again.embed(["rail strike", ""])
    assert v.shape == (2, 8) and first.dim == 8 and again.backend == "static"
    assert abs(float(np.linalg.norm(v[0])) - 1.0) < 1e-5


def test_the_setting_turns_the_first_pass_on_and_the_metric_counts_what_skips(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    from classify import worker

    assert worker.first_pass_of(load_settings(None)) is None  # off by default
    asked: list[str] = []

    def fake_distilled(model: str) -> Any:
        asked.append(model)
        return BagOfWordsEmbedder()

    monkeypatch.setattr(prefilter, "distilled", fake_distilled)
    fp = worker.first_pass_of(load_settings(None, classify={"first_pass": True, "model": "/models/local-st"}))
    assert isinstance(fp, FirstPass) and asked == ["/models/local-st"]

    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("wirewatch_classify_first_pass_total", {"outcome": outcome}) or 0.0

    before = count("passed"), count("skipped")
    h = Handler(load_settings(None), classifier(), ListProducer(), None, first_pass(slack=0.0))  # type: ignore[arg-type]
    h([consumed(1, "Rail strike: train drivers strike over pay"), consumed(2, "Cup final won on penalties"),
       consumed(3, "Museum opens its doors")])
    assert (count("passed") - before[0], count("skipped") - before[1]) == (1.0, 2.0)


def test_the_first_pass_treats_a_language_the_model_does_not_read_as_the_full_scorer_does() -> None:
    fp = first_pass(slack=0.0)
    topic = Topic(id="quake", name="Earthquakes", description="earthquake shakes city buildings collapse",
                  examples=("earthquake shakes capital", "buildings collapse after quake"), include_any=("Richter",),
                  counter_examples=("Richter scale museum exhibition opens",))
    # Closer to the counter-example than to any example: in a language the model reads, the rule's evidence fades.
    text = ["Richter scale museum exhibition opens with a quake"]
    reads = frozenset({"en"})
    faded = fp.scores(text, [topic], languages=["en"], reads=reads)[0][0, 0]
    unfaded = fp.scores(text, [topic], languages=["es"], reads=reads)[0][0, 0]
    unknown = fp.scores(text, [topic], reads=reads)[0][0, 0]
    assert unfaded > faded and unknown == pytest.approx(faded)
    assert fp.index_for([topic], reads).languages == reads and fp.index_for([topic]).languages is None
    # Asking with and without the languages keeps both indexes: neither is rebuilt.
    assert fp.index_for([topic], reads) is fp.index_for([topic], reads)
