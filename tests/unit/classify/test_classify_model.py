"""The packaged model end to end: backends agree, the seed article matches the Aleppo topic, and the
combined model beats cosine alone and keywords alone on the shipped Aleppo set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from classify.classifier import Classifier
from classify.embedder import CachedEmbedder, EmbedderError, load_embedder, resolve_model_path
from classify.evaluate import evaluate, load_labelled
from classify.topics import load_topic_file
from wirewatch.records import Article

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT.parent / "shared" / "seed-article.txt"
ALEPPO = ROOT / "examples" / "aleppo"
NOW = datetime(2016, 12, 7, tzinfo=UTC)


@pytest.fixture(scope="module")
def int8() -> Iterator[CachedEmbedder]:
    yield load_embedder(backend="onnx-int8", threads=2)


@pytest.fixture(scope="module")
def aleppo(int8: CachedEmbedder) -> Classifier:
    c = Classifier(int8)
    c.set_topics(load_topic_file(ALEPPO / "topics.toml"))
    return c


def test_unknown_model_path_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match=str(tmp_path)):
        resolve_model_path(str(tmp_path))


def test_backends_agree_with_sentence_transformers_fp32(int8: CachedEmbedder) -> None:
    texts = ["Ceasefire agreed in Aleppo", "Stock markets fall on weak factory data", "", "a" * 5000]
    ref = load_embedder(backend="torch", cache_size=0, threads=2).embed(texts)
    onnx = load_embedder(backend="onnx", cache_size=0, threads=2).embed(texts)
    q8 = int8.embed(texts)
    assert ref.shape == (4, 384) and np.allclose(np.linalg.norm(q8, axis=1), 1.0, atol=1e-4)
    assert float(np.min((ref * onnx).sum(axis=1))) > 0.9999
    agreement = (ref * q8).sum(axis=1)
    assert float(np.min(agreement[:2])) > 0.985  # per-channel int8, on real sentences
    assert float(np.min(agreement)) > 0.95  # degenerate inputs (empty, one repeated letter) still embed sanely


# Outside CI a checkout may lack ../shared; in CI (CI=true) it is always there, so a missing file fails the test.
@pytest.mark.skipif(not SEED.exists() and not os.environ.get("CI"),
                    reason="../shared/seed-article.txt is not checked out here")
def test_seed_article_matches_the_aleppo_topic(aleppo: Classifier) -> None:
    title, _, body = SEED.read_text(encoding="utf-8").partition("\n")
    summary, _, content = body.partition("\n")
    article = Article(id="seed", title=title, summary=summary, content=content, published_at=NOW, fetched_at=NOW,
                      feed_url="https://abcnews.example/feed")
    batch = aleppo.classify([article])
    assert [m.topic_id for m in batch.matches] == ["aleppo-ceasefire"]
    m = batch.matches[0]
    assert m.score >= m.threshold and "Aleppo" in m.evidence.keywords and m.evidence.closest


def test_aleppo_topic_passes_its_own_story_and_not_an_earlier_truce(aleppo: Classifier) -> None:
    def art(title: str, summary: str) -> Article:
        return Article(id=title[:20], title=title, summary=summary, published_at=NOW, fetched_at=NOW, feed_url="f")

    batch = aleppo.classify([
        art("Evacuation of east Aleppo resumes after delay", "Buses left the last rebel districts overnight."),
        art("Aleppo pepper prices soar", "Cooks pay more for the spice."),
    ])
    assert [m.article.title for m in batch.matches] == ["Evacuation of east Aleppo resumes after delay"]


def test_combined_model_beats_cosine_and_keywords_on_the_shipped_set(aleppo: Classifier) -> None:
    report = evaluate(aleppo, load_topic_file(ALEPPO / "topics.toml"), load_labelled(ALEPPO / "articles.jsonl"))
    r = report.topics["aleppo-ceasefire"]
    assert r.positives >= 30
    assert r.f1 is not None and r.cosine_best_f1 is not None and r.keyword_f1 is not None
    # At the configured threshold, against baselines given their best threshold in hindsight.
    assert r.f1 > r.cosine_best_f1 and r.f1 > r.keyword_f1


def test_onnx_backend_refuses_a_model_with_modules_it_cannot_reproduce(tmp_path: Path) -> None:
    import json
    import shutil

    model = tmp_path / "with-dense"
    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), model)
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(EmbedderError, match="Dense.*use backend torch"):
        load_embedder(str(model), backend="onnx", onnx_dir=tmp_path / "cache")
