"""The benchmark's core: the classifier as a worker builds it, and every replay of one stream.

Each replay gets a registry namespace (Redis key prefix) of its own, so it starts from the topics as written
and no replay sees another's feedback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from bench.feedback.data import Stream, embed_stream
from bench.feedback.replay import replay
from bench.feedback.report import SetResult
from classify.classifier import Classifier
from classify.topics import TopicStore, enabled
from wirewatch import state
from wirewatch.records import Topic
from wirewatch.settings import Settings

Say = Callable[[str], None]


def build_classifier(settings: Settings, *, cache_size: int) -> Classifier:
    """The classifier with the settings' embedder; its cache holds every item, so feedback texts are hits."""
    from classify.embedder import embedder_for

    c = settings.classify
    embedder = embedder_for(c, cache_size=max(c.embed_cache_size, cache_size))
    return Classifier(embedder, content_chars=c.content_chars, include_vector=False)


def run_set(classifier: Classifier, settings: Settings, stream: Stream, topics: Sequence[Topic],
            orders: Sequence[NDArray[np.intp]], seeds: Sequence[int | None], *, title: str, namespace: str,
            tail: float = 0.4, checkpoints: Sequence[int] = (0, 5, 10, 20, 50), miss_every: int = 10,
            interval_s: float = 0.01, wait_s: float = 10.0, progress: Say | None = None) -> SetResult:
    """Embed ``stream`` once and replay it in each of ``orders`` against the enabled ``topics``."""
    say = progress or (lambda _msg: None)
    chosen = enabled(topics)
    data = embed_stream(classifier, stream, lambda done, n: say(f"{stream.name}: embedding {done}/{n} items"))
    limit = max(checkpoints)
    client = state.connect(settings)
    traces = []
    for k, (order, seed) in enumerate(zip(orders, seeds, strict=True)):
        prefix = f"{namespace}-{'t' if seed is None else seed}:"
        ns = settings.model_copy(update={"redis": settings.redis.model_copy(update={"key_prefix": prefix})})
        run = f"{stream.name}: replay {k + 1}/{len(orders)}" + ("" if seed is None else f" (seed {seed})")

        def show(pos: int, judged: int, count: int, run: str = run) -> None:
            say(f"{run}: item {pos}/{judged} of the judged part, {count} judgements")

        try:
            traces.append(replay(classifier, TopicStore(client, ns), chosen, data, order, tail=tail, limit=limit,
                                 miss_every=miss_every, checkpoints=checkpoints, interval_s=interval_s,
                                 wait_s=wait_s, seed=seed, progress=show))
        finally:
            stale = list(client.scan_iter(match=f"{prefix}*"))
            if stale:
                client.delete(*stale)
    return SetResult(stream.name, title, [t.id for t in chosen], traces, sorted(set(checkpoints)), limit)
