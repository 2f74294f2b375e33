"""Reading a fetched body: parse -> keep the newest entries -> normalize -> claim in the seen store.

These are the CPU steps of a poll; :func:`ingest.flow.pipeline` runs them together in a parse thread (the
claim is one pipelined Redis round trip). Nothing here is remembered as done: the claims lapse unless the
poll commits them after Kafka's acknowledgement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ingest.dedup import Fate, SeenStore
from ingest.fetcher import FetchResult
from ingest.normalize import Normalized
from ingest.parser import ParsedFeed, parse
from wirewatch import metrics
from wirewatch.records import Article


def parse_newest(result: FetchResult, max_entries: int) -> ParsedFeed:
    """Parse ``result``'s body, keeping its first ``max_entries`` entries. Raises :class:`ParseError`."""
    parsed = parse(result.body, result.headers, result.url)
    if len(parsed.entries) > max_entries:
        # Feeds list newest first: the head is what is news; the tail of a huge archive is not.
        metrics.INGEST_ITEMS.labels("truncated").inc(len(parsed.entries) - max_entries)
        parsed = replace(parsed, entries=parsed.entries[:max_entries])
    return parsed


@dataclass(frozen=True)
class Claimed:
    """The normalized entries of one read, each with its fate in the seen store."""

    items: list[Normalized]
    fates: list[Fate]
    stale: int = 0
    """Entries dropped as re-served ancients (their claims released)."""

    def counts(self) -> dict[Fate, int]:
        """How many entries met each fate."""
        counts = {f: 0 for f in Fate}
        for fate in self.fates:
            counts[fate] += 1
        return counts

    def to_publish(self) -> tuple[list[Article], list[tuple[str, str]]]:
        """The new and updated articles, oldest first, and the (id, digest) pairs to mark seen once they are out."""
        send: list[Article] = []
        done: list[tuple[str, str]] = []
        for n, fate in zip(self.items, self.fates, strict=True):
            if fate is Fate.NEW or fate is Fate.UPDATED:
                send.append(n.article.model_copy(update={"update": True}) if fate is Fate.UPDATED else n.article)
                done.append((n.article.id, n.digest))
        send.reverse()  # feeds list newest first; publish oldest first
        return send, done


def claim(seen: SeenStore, items: list[Normalized], *, fetched: datetime, read_before: bool,
          seen_ttl_s: float) -> Claimed:
    """Claim ``items`` in the seen store; in a feed read before, release and drop the re-served ancients."""
    fates = seen.claim([(n.article.id, n.digest) for n in items])
    if not read_before:
        return Claimed(items, fates)
    # Never seen, dated before the seen store's memory, in a feed we already read: a re-served ancient whose
    # seen key lapsed, not news. (A feed's first read publishes everything it lists.)
    oldest = fetched - timedelta(seconds=seen_ttl_s)
    ancient = [i for i, (n, f) in enumerate(zip(items, fates, strict=True))
               if f is Fate.NEW and not n.article.published_estimated and n.article.published_at < oldest]
    if not ancient:
        return Claimed(items, fates)
    seen.release([items[i].article.id for i in ancient])
    drop = set(ancient)
    return Claimed([n for i, n in enumerate(items) if i not in drop],
                   [f for i, f in enumerate(fates) if i not in drop], len(drop))


@dataclass(frozen=True)
class Read:
    """What one full read of a body found."""

    parsed: ParsedFeed
    claimed: Claimed
    invalid: int
    """Entries normalize refused."""
