"""The recent-article store: the last N classified articles with their vectors, for previews and calibration.

One Redis list (newest first) trimmed to ``classify.recent_store_size`` on every write, so it never grows
past its bound; each entry is the article (content cut to its lead) and its vector as float16.
Writes are best effort: the store serves previews, so an outage is logged and never stops classification.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import redis

from classify.embedder import Vectors
from wirewatch.log import get_logger
from wirewatch.records import Article, RecordError, decode, utcnow
from wirewatch.settings import Settings
from wirewatch.state import key

log = get_logger("classify.recent")


@dataclass(frozen=True)
class Recent:
    """Articles and their unit-norm vectors, newest first."""

    articles: list[Article]
    vectors: Vectors

    def __len__(self) -> int:
        return len(self.articles)


class RecentStore:
    """A bounded list of recent articles with vectors, shared by all classify workers."""

    def __init__(self, client: redis.Redis, settings: Settings, *, size: int | None = None,
                 content_chars: int = 600) -> None:
        self._client = client
        self._key = key(settings, "classify", "recent")
        self.size = settings.classify.recent_store_size if size is None else size
        self._content_chars = content_chars

    def add(self, articles: Sequence[Article], vectors: Vectors) -> bool:
        """Remember ``articles`` with their vectors; False (logged) when Redis could not be written."""
        if not articles or self.size <= 0:
            return True
        entries = []
        for article, vec in zip(articles, vectors, strict=True):
            lead = article.content[: self._content_chars] if article.content else article.content
            data = article.model_copy(update={"content": lead}).model_dump(mode="json")
            entries.append(json.dumps({"a": data, "v": base64.b64encode(vec.astype(np.float16).tobytes()).decode()}))
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.lpush(self._key, *entries)
            pipe.ltrim(self._key, 0, self.size - 1)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("recent_store_write_failed", count=len(entries), error=str(exc))
            return False
        return True

    def recent(self, hours: float | None = None, *, limit: int | None = None, now: datetime | None = None) -> Recent:
        """Stored articles published (or fetched, when undated) within ``hours``, newest first."""
        raw = self._client.lrange(self._key, 0, (limit or self.size) - 1)
        cutoff = (now or utcnow()) - timedelta(hours=hours) if hours is not None else None
        articles: list[Article] = []
        vecs: list[Vectors] = []
        for item in raw:
            try:
                obj = json.loads(item)
                article = decode(Article, obj["a"])
                vec = np.frombuffer(base64.b64decode(obj["v"]), dtype=np.float16).astype(np.float32)
            except (ValueError, KeyError, RecordError) as exc:
                log.warning("recent_store_entry_unreadable", error=str(exc))
                continue
            when = article.fetched_at if article.published_estimated else article.published_at
            if cutoff is not None and when < cutoff:
                continue
            articles.append(article)
            vecs.append(vec / max(float(np.linalg.norm(vec)), 1e-9))
        dim = len(vecs[0]) if vecs else 0
        return Recent(articles, np.stack(vecs) if vecs else np.zeros((0, dim), dtype=np.float32))

    def clear(self) -> None:
        """Forget everything (tests and operators)."""
        self._client.delete(self._key)
