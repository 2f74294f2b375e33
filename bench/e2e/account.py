"""The end-to-end benchmark's accounting: from the records on the three topics and what the webhook received, what
was lost, what was notified twice or suppressed, each article's hop latencies and the rates."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

from bench.e2e.farm import Farm
from wirewatch.demo.receiver import WebhookReceiver

HOPS = ("appear_to_fetched", "fetched_to_kafka", "kafka_to_classified", "classified_to_notified",
        "fetch_to_notify")


def pct(values: list[float], q: float) -> float | None:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else None


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def due_pairs(match_records: list[Any]) -> set[tuple[str, str]]:
    """(topic id, article url) of every match: with min_score 0, each is due to its topic's subscription."""
    out = set()
    for r in match_records:
        m = json.loads(r.value)
        out.add((m["topic_id"], m["article"]["url"]))
    return out


def suppressed(delivery_records: list[Any], art_records: list[Any], run: str) -> dict[tuple[str, str], str]:
    """(topic id, article url) -> reason, for this run's deliveries the alerts worker suppressed (a story
    already notified, say): accounted for, not lost."""
    url_of = {r.key.decode(): json.loads(r.value)["url"] for r in art_records if r.key}
    out = {}
    for r in delivery_records:
        d = json.loads(r.value)
        sub = str(d.get("subscription_id", ""))
        if d.get("status") == "suppressed" and sub.startswith(f"{run}-"):
            for aid in d.get("article_ids", []):
                if aid in url_of:
                    out[(sub[len(run) + 1:], url_of[aid])] = str(d.get("reason", ""))
    return out


def notified(receiver: WebhookReceiver, run: str) -> Counter[tuple[str, str]]:
    """(topic id, article url) -> notifications received for this run (distinct idempotency keys)."""
    got: Counter[tuple[str, str]] = Counter()
    for rec in list(receiver.received):
        sub = str(rec.body.get("subscription_id", ""))
        if sub.startswith(f"{run}-"):
            for it in rec.body.get("items", []):
                got[(sub[len(run) + 1:], it["url"])] += 1
    return got


class Tally:
    """What the wait loop checks, kept up to date as records arrive, each decoded once (re-reading everything
    on every round made the harness's own CPU grow with the run, on the cores the workers share): article
    keys on Kafka, due (topic id, url) pairs, notified pairs and suppressed pairs."""

    def __init__(self, receiver: WebhookReceiver, run: str) -> None:
        self.receiver, self.run = receiver, run
        self.keys: set[bytes | None] = set()
        self.due: set[tuple[str, str]] = set()
        self.got: set[tuple[str, str]] = set()
        self._url_of: dict[str, str] = {}
        self._suppressed: list[tuple[str, str, str]] = []  # (topic id, article id, reason)
        self._read = 0

    def add(self, art_recs: list[Any], match_recs: list[Any], delivery_recs: list[Any]) -> None:
        """Take in records newly read from the articles, matches and deliveries topics."""
        for r in art_recs:
            self.keys.add(r.key)
            if r.key:
                self._url_of[r.key.decode()] = json.loads(r.value)["url"]
        self.due |= due_pairs(match_recs)
        for r in delivery_recs:
            d = json.loads(r.value)
            sub = str(d.get("subscription_id", ""))
            if d.get("status") == "suppressed" and sub.startswith(f"{self.run}-"):
                self._suppressed += [(sub[len(self.run) + 1:], aid, str(d.get("reason", "")))
                                     for aid in d.get("article_ids", [])]
        new = self.receiver.received[self._read:]
        self._read += len(new)
        for rec in new:
            sub = str(rec.body.get("subscription_id", ""))
            if sub.startswith(f"{self.run}-"):
                self.got |= {(sub[len(self.run) + 1:], it["url"]) for it in rec.body.get("items", [])}

    def folded(self) -> dict[tuple[str, str], str]:
        """(topic id, article url) -> reason, for due deliveries the alerts rules suppressed (as :func:`suppressed`)."""
        return {(t, self._url_of[aid]): why for t, aid, why in self._suppressed if aid in self._url_of}

    def complete(self) -> bool:
        """Whether every due pair so far was notified or suppressed."""
        return self.got | set(self.folded()) >= self.due


def account(items: list[Any], farm: Farm, art_recs: list[Any], match_recs: list[Any], receiver: WebhookReceiver,
            run: str, lags: list[Any], release: float, classified_at: float | None, done_at: float,
            folded: dict[tuple[str, str], str]) -> dict[str, Any]:
    arts: dict[str, dict[str, Any]] = {}
    for r in art_recs:
        a = json.loads(r.value)
        arts.setdefault(a["url"], a | {"_kafka": r.timestamp / 1000})
    classified: dict[str, float] = {}
    for r in match_recs:
        m = json.loads(r.value)
        u = m["article"]["url"]
        classified[u] = min(classified.get(u, float("inf")), ts(m["classified_at"]))
    got = notified(receiver, run)
    first_notice: dict[str, float] = {}
    for rec in receiver.received:
        if str(rec.body.get("subscription_id", "")).startswith(f"{run}-"):
            for it in rec.body.get("items", []):
                first_notice[it["url"]] = min(first_notice.get(it["url"], float("inf")), rec.at)
    n_of = {u: int(u.rsplit("/", 1)[1]) for u in arts}
    hops: dict[str, list[float]] = {h: [] for h in HOPS}
    for u, a in arts.items():
        fetched = ts(a["fetched_at"])
        hops["appear_to_fetched"].append(fetched - farm.appear[n_of[u]])
        hops["fetched_to_kafka"].append(a["_kafka"] - fetched)
        if u in classified:
            hops["kafka_to_classified"].append(classified[u] - a["_kafka"])
            if u in first_notice:
                hops["classified_to_notified"].append(first_notice[u] - classified[u])
        if u in first_notice:
            hops["fetch_to_notify"].append(first_notice[u] - fetched)
    due = due_pairs(match_recs)
    never_on_kafka = len(items) - len(arts)
    uncommitted = sum(x.lag for x in lags) if lags else len(arts)
    missing = len(due - set(got) - set(folded))
    first_fetch = min((ts(a["fetched_at"]) for a in arts.values()), default=release)
    span = (classified_at or done_at) - first_fetch
    return {
        "articles_per_s": len(arts) / max(span, 1e-9) if classified_at else 0.0,
        "notified_articles_per_s": len(arts) / max(done_at - first_fetch, 1e-9),
        "seconds": done_at - release, "on_kafka": len(arts), "matches": len(match_recs), "due": len(due),
        "notifications": sum(got.values()), "duplicates": sum(n - 1 for n in got.values() if n > 1),
        "repeats_same_key": receiver.repeats, "suppressed": len(due & set(folded)),
        "suppressed_reasons": dict(Counter(folded[k] for k in due & set(folded))),
        "lost": never_on_kafka + uncommitted + missing,
        "lost_detail": {"never_on_kafka": never_on_kafka, "not_committed_by_classify": uncommitted,
                        "due_not_notified": missing},
        "hops": {h: {"p50_s": pct(v, 50), "p99_s": pct(v, 99), "n": len(v)} for h, v in hops.items()},
        "p99_fetch_to_notify_s": pct(hops["fetch_to_notify"], 99),
    }
