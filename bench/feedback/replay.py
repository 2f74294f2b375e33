"""Replay a labelled stream through the classifier while a simulated editor judges what it alerts on.

Feedback takes the API's path: :meth:`TopicStore.feedback` writes a new topic version to the registry in
Redis, the classifier follows the registry through a :class:`~wirewatch.registry.Watcher` as a classify
worker does, and the replay waits (bounded) until ``classifier.index`` shows the new version before it
scores the next item. The stream's last ``tail`` share is never judged: it is the fixed evaluation tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bench.feedback.data import Embedded
from classify.classifier import Classifier
from classify.scorer import TopicIndex
from classify.topics import TopicStore
from wirewatch.records import Topic
from wirewatch.scores import prf

Progress = Callable[[int, int, int], None]
"""``progress(position, judged_part, judgements)``: items passed, items that may be judged, judgements so far."""


class ReloadTimeout(RuntimeError):
    """The classifier did not show a topic version written to the registry within the wait."""


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 at the topic's threshold on a span of the stream."""

    precision: float
    recall: float
    f1: float
    alerts: int
    positives: int

    @classmethod
    def of(cls, pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> PRF:
        """Figures of ``pred`` against ``truth``."""
        p, r, f = prf(pred, truth)
        return cls(p, r, f, int(pred.sum()), int(truth.sum()))


@dataclass(frozen=True)
class Point:
    """One topic's figures after its ``n``-th judgement (``n`` = 0: before any)."""

    n: int
    kind: str
    """``start``, ``relevant`` (an alert judged relevant), ``not_relevant`` (a false alarm) or ``miss``."""
    position: int
    """Stream position of the judged item (-1 at the start)."""
    item_id: str
    version: int
    changed: bool
    """False when the text was already on that side of the topic (the API changes nothing then)."""
    tail: PRF
    """On the fixed evaluation tail."""
    rest: PRF | None
    """On every item after the point reached (tail included); measured at the checkpoints only."""


@dataclass
class Editor:
    """One topic's simulated editor: knows the labels, judges every alert, and in every ``miss_every``-th
    judgement slot reports the latest positive the topic did not alert on (as soon as there is one)."""

    topic_id: str
    limit: int
    miss_every: int
    count: int = 0
    owes_miss: bool = False
    missed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.owes_miss = self.miss_every == 1

    @property
    def active(self) -> bool:
        """True while the editor still judges."""
        return self.count < self.limit

    def judged(self, kind: str) -> None:
        """Count one judgement and decide whether the next slot is a miss report."""
        self.count += 1
        if kind == "miss":
            self.owes_miss = False
        if self.miss_every > 0 and (self.count + 1) % self.miss_every == 0:
            self.owes_miss = True


@dataclass
class Trace:
    """Everything one replay measured."""

    stream: str
    seed: int | None
    items: int
    tail_start: int
    points: dict[str, list[Point]]
    reload_ms: list[float]
    seconds: float = 0.0


def versions_in_force(classifier: Classifier) -> dict[str, int]:
    """Topic id -> version of the index the classifier scores with now."""
    return {t.id: t.version for t in classifier.index.topics}


def wait_for(classifier: Classifier, want: dict[str, int], wait_s: float) -> float:
    """Wait until the classifier's index holds at least the versions ``want``; returns the seconds waited.

    Raises:
        ReloadTimeout: after ``wait_s`` seconds without them.
    """
    started = time.monotonic()
    while True:
        have = versions_in_force(classifier)
        late = {k: v for k, v in want.items() if have.get(k, 0) < v}
        if not late:
            return time.monotonic() - started
        if time.monotonic() - started > wait_s:
            raise ReloadTimeout(f"the classifier did not pick up {late} from the registry within {wait_s:g} s "
                                f"(in force: {have})")
        time.sleep(0.001)


def replay(classifier: Classifier, store: TopicStore, topics: Sequence[Topic], data: Embedded,
           order: NDArray[np.intp], *, tail: float = 0.4, limit: int = 50, miss_every: int = 10,
           checkpoints: Sequence[int] = (0, 5, 10, 20, 50), interval_s: float = 0.01, wait_s: float = 10.0,
           seed: int | None = None, chunk: int = 32, progress: Progress | None = None) -> Trace:
    """Replay ``data`` in ``order`` against ``topics``, put into ``store`` (a namespace of its own) as given.

    Items are scored with the index in force, a few at a time, up to the next alert; after each judgement the
    judged topic is measured on the tail after every judgement and on the rest of the stream at
    ``checkpoints``.

    Raises:
        ReloadTimeout: when a topic version does not reach the classifier in ``wait_s`` seconds.
    """
    started = time.monotonic()
    n = len(order)
    tail_start = min(max(int(round(n * (1 - tail))), 0), n)
    vec = data.vectors[order]
    docs = [data.docs[i] for i in order]
    texts = [data.feedback[i] for i in order]
    ids = [data.stream.articles[i].id for i in order]
    truth = {t.id: data.truth(t.id)[order] for t in topics}
    editors = {t.id: Editor(t.id, limit, miss_every) for t in topics}
    trace = Trace(data.stream.name, seed, n, tail_start, {t.id: [] for t in topics}, [])

    def alerts(index: TopicIndex, lo: int, hi: int) -> NDArray[np.bool_]:
        # What production alerts on: at threshold, not vetoed and, in a desk, the article's best topic.
        s = index.score(vec[lo:hi], docs[lo:hi])
        hit = (s.scores >= index.thresholds[None, :]) & ~s.excluded
        return np.asarray(hit if s.outranked is None else hit & ~s.outranked)

    def measure(tid: str, p: int, kind: str, pos: int, version: int, changed: bool) -> None:
        # The topic set in force, as a worker runs it: in a desk a topic's alerts depend on the other topics.
        index = classifier.index
        col = index.position(tid)
        a_tail = alerts(index, tail_start, n)[:, col]
        rest = None
        if editors[tid].count in checkpoints:
            a_rest = np.concatenate([alerts(index, p, tail_start)[:, col], a_tail])
            rest = PRF.of(a_rest, truth[tid][p:])
        trace.points[tid].append(Point(editors[tid].count, kind, pos, ids[pos] if pos >= 0 else "", version,
                                       changed, tail=PRF.of(a_tail, truth[tid][tail_start:]), rest=rest))

    for t in topics:
        store.put(t)
    watcher = store.watch(classifier.set_topics, interval_s=interval_s)
    try:
        wait_for(classifier, {t.id: t.version for t in topics}, wait_s)
        for t in topics:
            measure(t.id, 0, "start", -1, t.version, True)
        p = 0
        while True:
            active = [e for e in editors.values() if e.active]
            judgements = owed_misses(active)
            while not judgements and p < tail_start:
                index = classifier.index
                hi = min(p + chunk, tail_start)
                live = alerts(index, p, hi)[:, [index.position(e.topic_id) for e in active]]
                rows = np.flatnonzero(live.any(axis=1))
                end = p + int(rows[0]) + 1 if len(rows) else hi
                for k, e in enumerate(active):
                    seen = np.flatnonzero(truth[e.topic_id][p:end] & ~live[:end - p, k])
                    e.missed.extend((p + seen).tolist())
                    if len(rows) and live[rows[0], k]:
                        j = p + int(rows[0])
                        rel = bool(truth[e.topic_id][j])
                        judgements.append((e, j, rel, "relevant" if rel else "not_relevant"))
                p = end
                judgements = judgements or owed_misses(active)
            if not judgements:
                break  # the judged part is passed and no editor owes a miss it has seen
            want, done = {}, []
            for e, j, rel, kind in judgements:
                version, changed = judge(store, e.topic_id, texts[j], rel)
                e.judged(kind)
                done.append((e.topic_id, kind, j, version, changed))
                want[e.topic_id] = version
            if want:
                trace.reload_ms.append(1000 * wait_for(classifier, want, wait_s))
            for tid, kind, j, version, changed in done:
                measure(tid, p, kind, j, version, changed)
            if progress:
                progress(p, tail_start, sum(e.count for e in editors.values()))
    finally:
        watcher.stop()
    trace.seconds = time.monotonic() - started
    return trace


def owed_misses(editors: Sequence[Editor]) -> list[tuple[Editor, int, bool, str]]:
    """The misses editors report now: the latest unreported one of each editor whose slot it is."""
    return [(e, e.missed.pop(), True, "miss") for e in editors if e.owes_miss and e.missed]


def judge(store: TopicStore, topic_id: str, text: str, relevant: bool) -> tuple[int, bool]:
    """Send one judgement the API's way; returns the topic's version after it and whether it changed.

    Like the API's feedback route, a text already on the judged side changes nothing.
    """
    topic = store.get(topic_id)
    if topic is None:
        raise KeyError(f"no topic {topic_id!r} in the store")
    if text.strip() in (topic.examples if relevant else topic.counter_examples):
        return topic.version, False
    return store.feedback(topic_id, text, relevant).version, True
