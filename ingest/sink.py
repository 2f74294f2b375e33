"""Where normalized articles go: Kafka's ``articles`` topic, keyed by article id, batched across feeds."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from wirewatch import bus, metrics
from wirewatch.log import get_logger
from wirewatch.records import Article
from wirewatch.settings import Settings

log = get_logger("ingest.sink")
# Kafka's default largest record is 1 MiB, and a produce batch that holds one larger record is refused whole:
# one such article would stop every feed whose articles share its batch. Normalized articles stay far below.
MAX_RECORD_BYTES = 900_000


class Sink(Protocol):
    """Publishes articles.

    ``publish`` returns only once every article is durably accepted (for Kafka: acknowledged by the
    brokers); it raises :class:`wirewatch.bus.ProduceError` (or another exception) when that could not be
    confirmed, in which case the caller must treat none of them as published. An article whose record would
    be larger than Kafka takes (:data:`MAX_RECORD_BYTES`) is counted invalid, logged and left out, so that it
    cannot fail the batch of every other feed.
    """

    async def publish(self, articles: Sequence[Article]) -> None:
        """Publish ``articles``. See the class docstring."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources."""
        ...


class KafkaSink:
    """The :class:`Sink` on :class:`wirewatch.bus.Producer`.

    Concurrent ``publish`` calls from many feeds are gathered into one ``send_many`` (one acknowledgement
    wait for all of them) by a single background task, so a round of thousands of small feeds costs a few
    produce batches rather than thousands.
    """

    def __init__(self, settings: Settings, producer: bus.Producer | None = None, *, max_batch: int = 2000,
                 timeout_s: float = 60.0) -> None:
        self.topic = settings.kafka.topics.articles
        self._producer = producer or bus.Producer(settings, client_id="ingest")
        self._max_batch = max_batch
        self._timeout_s = timeout_s
        self._pending: list[tuple[list[bus.Outgoing], asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-produce")

    def _ensure_started(self) -> asyncio.Event:
        if self._wake is None or self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kafka-sink")
        return self._wake

    def outgoing(self, article: Article) -> bus.Outgoing:
        """The Kafka record of one article."""
        headers = [("wirewatch.kind", b"article")]
        if article.feed_id:
            headers.append(("wirewatch.feed", article.feed_id.encode()))
        if article.update:
            headers.append(("wirewatch.update", b"1"))
        return bus.Outgoing(self.topic, article.id, article.to_json(), headers)

    async def publish(self, articles: Sequence[Article]) -> None:
        """See :class:`Sink`."""
        records = []
        for article in articles:
            record = self.outgoing(article)
            if len(record.value) > MAX_RECORD_BYTES:
                metrics.INGEST_ITEMS.labels("invalid").inc()
                log.error("article_too_large", feed_id=article.feed_id, article_id=article.id,
                          bytes=len(record.value), limit=MAX_RECORD_BYTES)
                continue
            records.append(record)
        if not records:
            return
        wake = self._ensure_started()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, fut))
        wake.set()
        await fut

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch: list[tuple[list[bus.Outgoing], asyncio.Future[None]]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= self._max_batch):
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += len(item[0])
                records = [r for items, _ in batch for r in items]
                try:
                    await loop.run_in_executor(self._pool, self._producer.send_many, records, self._timeout_s)
                except Exception as exc:  # noqa: BLE001 - every waiter learns its batch was not acknowledged
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)

    async def aclose(self) -> None:
        """See :class:`Sink`."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing; nothing left to report to
                pass
        await asyncio.get_running_loop().run_in_executor(self._pool, self._producer.close)
        self._pool.shutdown(wait=False)


class ListSink:
    """A :class:`Sink` that keeps articles in memory (for tests and ``feeds parse``); ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.articles: list[Article] = []
        self.fail: Exception | None = None

    async def publish(self, articles: Sequence[Article]) -> None:
        """See :class:`Sink`."""
        if self.fail is not None:
            raise self.fail
        self.articles.extend(articles)

    async def aclose(self) -> None:
        """See :class:`Sink`."""
