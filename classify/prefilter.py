"""A cheap first pass: static embeddings decide which articles are worth the transformer.

The static model is distilled once from the packaged transformer with model2vec (each vocabulary token run
through the model, reduced by PCA, weighted by token frequency) and cached under ``~/.cache/wirewatch/static``
per model revision; it is never downloaded. A text is then the mean of its tokens' vectors: thousands of texts
per second on one core, against a few hundred for the transformer.

Every topic gets a second model in the static space, learned exactly as the full one is (the same features,
the same background, the same keyword evidence; see :mod:`classify.model`). Both models score the same
background articles when they are fitted, and that is what sets how far the static score may fall short: per
topic, among the background articles the full model rates highest, how many logits the static model rates them
below it (a high quantile of the gap), plus a fixed ``slack``. A topic whose two models agree (a named event:
places, actors) gets a small margin and lets most articles skip; one the static model reads poorly gets a wide
margin and lets almost everything through, which costs speed, not matches. An article goes on to the
transformer when, for some topic, its static logit comes within that margin of the logit of the topic's
threshold and no ``exclude`` rule vetoes it; every other article matches nothing, since the first pass only
ever removes articles. Skipped articles also get no vector, so the recent-article store (previews, calibration)
sees only the articles that went through.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classify.background import Background, shipped_background
from classify.embedder import (
    PACKAGED_MODEL,
    Embedder,
    EmbedderError,
    Vectors,
    model_revision,
    normalize,
    resolve_model_path,
)
from classify.model import desk_siblings
from classify.scorer import TopicIndex
from classify.topics import Doc
from wirewatch.log import get_logger
from wirewatch.records import Article, Topic

log = get_logger("classify.prefilter")

STATIC_CACHE = Path("~/.cache/wirewatch/static")
PCA_DIMS = 256
# Per topic, the gap is measured on the TOP_K background articles the full model rates highest, at quantile
# GAP_QUANTILE, and SLACK logits are added. Chosen with `python -m bench.classify.prefilter` on the dev streams
# (docs/performance.md): with these, no match of the full classifier was lost on the Kobani, BBC or synthetic
# topic sets. FALLBACK_MARGIN applies when the two backgrounds differ (a classifier given its own background).
TOP_K = 20
GAP_QUANTILE = 0.9
SLACK = 1.0
FALLBACK_MARGIN = 4.0
Bools = NDArray[np.bool_]


class StaticEmbedder:
    """A model2vec static model behind the :class:`classify.embedder.Embedder` protocol (rows unit norm)."""

    backend = "static"

    def __init__(self, model: Any, *, name: str, revision: str) -> None:
        self._model = model
        self.name = name
        self.revision = revision
        self.dim = int(model.dim)
        self.max_tokens = 512

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``; see :class:`classify.embedder.Embedder`."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(list(texts), max_length=self.max_tokens, use_multiprocessing=False)
        return normalize(out)


def distilled(model: str = PACKAGED_MODEL, *, cache_dir: Path | None = None,
              pca_dims: int = PCA_DIMS) -> StaticEmbedder:
    """The static model distilled from ``model``: read from the cache, else distilled once and cached.

    Distilling takes from half a minute to a few minutes on a small CPU and needs model2vec's ``distill``
    extra (torch and transformers, already there for the torch backend); reading the cache needs model2vec only.

    Raises:
        EmbedderError: when model2vec is missing, or the model cannot be distilled or read.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = resolve_model_path(model)
    revision = model_revision(path)
    target = (cache_dir or STATIC_CACHE).expanduser() / f"{revision}-pca{pca_dims}"
    name = f"{model}-static{pca_dims}"
    try:
        from model2vec import StaticModel
    except ImportError as exc:
        raise EmbedderError("the first pass needs the package model2vec (pip install model2vec)") from exc
    if not (target / "model.safetensors").is_file():
        _distill(path, target, pca_dims)
    try:
        static = StaticModel.from_pretrained(target, force_download=False)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a broken cache entry
        raise EmbedderError(f"cannot read the static model at {target}: {exc}") from exc
    return StaticEmbedder(static, name=name, revision=revision)


def _distill(path: Path, target: Path, pca_dims: int) -> None:
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise EmbedderError("distilling the static model needs model2vec's distill extra "
                            "(pip install 'model2vec[distill]')") from exc
    log.info("static_model_distilling", source=str(path), pca_dims=pca_dims, target=str(target))
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        distill(str(path), pca_dims=pca_dims).save_pretrained(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(target)
    except OSError as exc:
        if not (target / "model.safetensors").is_file():  # another process may have won the race
            raise EmbedderError(f"cannot write the static model to {target}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a failed distillation is a broken model
        raise EmbedderError(f"cannot distill {path} into a static model: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """The inverse of the logistic function, clipped away from 0 and 1."""
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


INDEXES_KEPT = 4


class FirstPass:
    """Tells which articles could reach some topic's threshold, from static embeddings and keywords.

    ``static`` is any :class:`~classify.embedder.Embedder`; in production :func:`distilled`'s model. :meth:`keep`
    follows the topics of whatever :class:`~classify.scorer.TopicIndex` it is given: their static models are
    learned on first sight and kept while their definitions do not change.
    """

    def __init__(self, static: Embedder, *, slack: float = SLACK, background: Background | None = None) -> None:
        self.static = static
        self.slack = slack
        self.background = background if background is not None else shipped_background(static)
        self._lock = threading.Lock()
        # The latest few topic sets (with and without the full model's languages), each built once.
        self._indexes: dict[tuple[str, ...], TopicIndex] = {}
        self._gaps: tuple[TopicIndex, NDArray[np.float64]] | None = None

    def index_for(self, topics: Sequence[Topic], languages: frozenset[str] | None = None) -> TopicIndex:
        """The static-space index of ``topics`` (rebuilt only when the topic definitions changed).

        ``languages`` are those the full model reads: the first pass treats an article in another language as
        the full scorer does (see :class:`~classify.scorer.TopicIndex`), so it never stops one the full would pass.
        """
        key = (*(t.model_dump_json(exclude={"updated_at"}) for t in topics), str(sorted(languages or ())))
        with self._lock:
            index = self._indexes.get(key)
            if index is None:
                index = TopicIndex.build(list(topics), self.static, self.background, desk_siblings(topics),
                                         languages=languages)
                self._indexes[key] = index
                while len(self._indexes) > INDEXES_KEPT:
                    self._indexes.pop(next(iter(self._indexes)))
                log.info("first_pass_topics", count=len(topics))
            return index

    def scores(self, texts: Sequence[str], topics: Sequence[Topic], *, languages: Sequence[str | None] | None = None,
               reads: frozenset[str] | None = None) -> tuple[NDArray[np.float64], Bools]:
        """Static scores of ``texts`` against ``topics``, shape ``(n, topics)``, and the exclude vetoes.

        ``languages``: each text's, when known; ``reads``: the languages the full model reads.
        """
        index = self.index_for(topics, reads)
        langs = list(languages) if languages is not None else [None] * len(texts)
        s = index.score(self.static.embed(texts), [Doc.of(t, lang) for t, lang in zip(texts, langs, strict=True)])
        return s.scores, s.excluded

    def gaps(self, index: TopicIndex) -> NDArray[np.float64]:
        """Per topic of the full ``index``, how far the static logit falls below the full one where it matters."""
        if self._gaps is not None and self._gaps[0] is index:
            return self._gaps[1]
        static = self.index_for(index.topics, index.languages)
        out = np.full(len(index.topics), FALLBACK_MARGIN - self.slack)
        for col, ((_, full), (_, mine)) in enumerate(zip(index.entries, static.entries, strict=True)):
            f, s = full.background_scores, mine.background_scores
            if len(f) != len(s) or not len(f):
                continue
            top = np.argsort(-f)[:TOP_K]
            out[col] = max(0.0, float(np.quantile(logit(f[top]) - logit(s[top]), GAP_QUANTILE)))
        self._gaps = (index, out)
        return out

    def gate(self, index: TopicIndex, slack: float | None = None) -> NDArray[np.float64]:
        """Per topic of ``index``, the static score an article needs to go on."""
        margin = self.gaps(index) + (self.slack if slack is None else slack)
        return np.asarray(1.0 / (1.0 + np.exp(-(logit(index.thresholds) - margin))), dtype=np.float64)

    def keep(self, texts: Sequence[str], index: TopicIndex, languages: Sequence[str | None] | None = None) -> Bools:
        """One boolean per text: could it reach the threshold of some topic of ``index``?

        ``languages``: each text's, when known.
        """
        if not len(texts) or not index.topics:
            return np.zeros(len(texts), dtype=bool)
        scores, excluded = self.scores(texts, index.topics, languages=languages, reads=index.languages)
        passed = (scores >= self.gate(index)[None, :]) & ~excluded
        return np.asarray(passed.any(axis=1), dtype=bool)

    def survivors(self, articles: Sequence[Article], classifier: Any) -> list[Article]:
        """The ``articles`` that go on to ``classifier`` (a :class:`~classify.classifier.Classifier`)."""
        mask = self.keep([classifier.text_of(a) for a in articles], classifier.index, [a.language for a in articles])
        return [a for a, k in zip(articles, mask, strict=True) if k]
