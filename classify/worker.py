"""``wirewatch classify``: consume articles in batches, produce Matches, commit after Kafka's acknowledgement.

Per batch: embed every article once (identical texts once), score against every enabled topic, produce a
Match per (article, topic) that passed, keyed by article id, and wait for the acks; the consumer loop then
commits. Undecodable records and unknown schema versions go to the articles DLQ (the loop does that).
Topics follow the registry: a change is in force within about a second, no restart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from classify.classifier import Classifier
from classify.embedder import embedder_for
from classify.prefilter import FirstPass
from classify.recent import RecentStore
from classify.topics import TopicStore
from wirewatch import bus, metrics, registry, state
from wirewatch.bus import REPLAY_HEADER, REPLAY_TOPIC_HEADER
from wirewatch.heap import HeapKeeper
from wirewatch.log import get_logger
from wirewatch.records import Article, Match, Topic, decode, encode
from wirewatch.settings import Settings

log = get_logger("classify.worker")


def decode_article(raw: bytes) -> Article:
    """Decode one consumed value (raises RecordError for the DLQ)."""
    return decode(Article, raw)


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode(errors="replace")
    return None


class Handler:
    """The consumer loop's batch handler: classify, produce, remember."""

    def __init__(self, settings: Settings, classifier: Classifier, producer: bus.Producer,
                 recent: RecentStore | None = None, first_pass: FirstPass | None = None) -> None:
        self._topic = settings.kafka.topics.matches
        self._classifier = classifier
        self._producer = producer
        self._recent = recent
        self._first_pass = first_pass

    def __call__(self, batch: list[bus.Consumed[Article]]) -> None:
        """Classify ``batch`` and produce its matches; returns once Kafka acknowledged them all."""
        started = time.monotonic()
        plain = [c for c in batch if _header(c.headers, REPLAY_HEADER) is None]
        replays = [c for c in batch if _header(c.headers, REPLAY_HEADER) is not None]
        matches: list[Match] = []
        articles = [c.value for c in plain]
        if articles and self._first_pass is not None:
            # The cheap first pass (classify/prefilter.py, off unless given): what it drops can match nothing.
            before = len(articles)
            articles = self._first_pass.survivors(articles, self._classifier)
            metrics.CLASSIFY_FIRST_PASS.labels("passed").inc(len(articles))
            metrics.CLASSIFY_FIRST_PASS.labels("skipped").inc(before - len(articles))
        if articles:
            result = self._classifier.classify(articles)
            matches += result.matches
            if self._recent is not None:
                self._recent.add(articles, result.vectors)
        for c in replays:
            only = _header(c.headers, REPLAY_TOPIC_HEADER)
            matches += self._classifier.classify([c.value], only_topic=only, replay=True).matches
        self._producer.send_many([bus.Outgoing(self._topic, m.article.id, encode(m)) for m in matches])
        for m in matches:
            metrics.CLASSIFY_MATCHES.labels(m.topic_id).inc()
        metrics.CLASSIFY_ARTICLES.inc(len(batch))
        now = time.time()
        for c in batch:
            metrics.observe_hop("classify", now - c.value.fetched_at.timestamp())
        metrics.CLASSIFY_BATCH_SECONDS.observe(time.monotonic() - started)
        log.debug("batch_classified", articles=len(batch), matches=len(matches))


@dataclass
class Worker:
    """The assembled worker; :meth:`close` after the loop returned."""

    loop: bus.ConsumerLoop[Article]
    classifier: Classifier
    watcher: registry.Watcher[Topic]
    producer: bus.Producer

    def close(self) -> None:
        """Stop following topics and flush the producer."""
        self.watcher.stop()
        self.producer.close()


def first_pass_of(settings: Settings) -> FirstPass | None:
    """The first pass ``classify.first_pass`` asks for (the static model distilled from ``classify.model``)."""
    if not settings.classify.first_pass:
        return None
    from classify.prefilter import distilled

    return FirstPass(distilled(settings.classify.model))


def build(settings: Settings) -> Worker:
    """Assemble the worker: model, topics (seeded, watched), recent store, producer and consumer loop."""
    from threadpoolctl import threadpool_limits

    # Scoring matrices are small; a second BLAS thread only waits on a core the model is using.
    threadpool_limits(1, user_api="blas")
    c = settings.classify
    embedder = embedder_for(c)
    metrics.CLASSIFY_MODEL.info({"model": embedder.name, "revision": embedder.revision, "backend": embedder.backend,
                                 "dim": str(embedder.dim)})
    classifier = Classifier(embedder, content_chars=c.content_chars, include_vector=c.include_vector)
    client = state.connect(settings)
    store = TopicStore(client, settings)
    store.seed()
    watcher = store.watch(classifier.set_topics, interval_s=c.reload_interval_s)
    producer = bus.Producer(settings, client_id="classify")
    handler = Handler(settings, classifier, producer, RecentStore(client, settings), first_pass_of(settings))
    loop: bus.ConsumerLoop[Article] = bus.ConsumerLoop(
        settings, topics=[settings.kafka.topics.articles], group=bus.role_group(settings, "classify"),
        decode=decode_article, handle=handler, producer=producer,
        config=bus.LoopConfig(batch_size=c.batch_size, max_wait_ms=c.max_wait_ms),
    )
    return Worker(loop, classifier, watcher, producer)


def run(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT."""
    metrics.serve(settings.classify.metrics_port, settings.ops.metrics_addr)
    worker = build(settings)
    worker.loop.install_signal_handlers()
    heap = HeapKeeper().start()  # after the model loaded: its objects are frozen once
    try:
        worker.loop.run()
    finally:
        heap.stop()
        worker.close()
