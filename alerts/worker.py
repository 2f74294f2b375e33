"""The alerts worker: consumes ``matches`` and turns them into notifications, exactly once per story.

:func:`pipeline` is the whole per-batch flow, top to bottom. The offsets of a batch are committed by the
consumer loop only after it returned, i.e. after every notification it decided on is durable in the
outbox and every suppression is on ``deliveries``; the sends themselves run right after, in the
delivery runner, so a slow channel never holds back consumption of the others.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from alerts import channels
from alerts.delivery import ChannelBuilder, Dispatcher
from alerts.digest import DigestQueue, DigestScheduler
from alerts.plan import Planner
from alerts.recorder import Recorder
from alerts.settle import OnSent
from alerts.stories import StoryFolder
from wirewatch import registry, state
from wirewatch.bus import Consumed, ConsumerLoop, Handler, LoopConfig, Producer, role_group
from wirewatch.heap import HeapKeeper
from wirewatch.log import get_logger
from wirewatch.records import Match, Subscription, Topic, decode
from wirewatch.settings import Settings

log = get_logger("alerts.worker")


def pipeline(stories: StoryFolder, planner: Planner, held: DigestQueue, recorder: Recorder,
             dispatcher: Dispatcher, subscriptions: Callable[[], dict[str, list[Subscription]]],
             topic_names: Callable[[], dict[str, str]]) -> Handler[Match]:
    """The per-batch flow: fold -> rules -> outbox and claims (durable) -> send and ledger -> audit -> commit."""

    def handle(batch: list[Consumed[Match]]) -> None:
        consumed_at = time.monotonic()
        folded = stories.fold([c.value for c in batch])                            # near-duplicates -> stories
        plan = planner.plan(folded, subscriptions(), topic_names(), datetime.now(UTC))  # subscription rules
        dispatcher.accept(plan.sends, consumed_at)            # outbox + claims (durable), then send -> ack -> ledger
        held.hold(plan.holds)                                                      # held for their digest
        recorder.record_now(plan.records)                                          # every suppression, audited
        return None                                                                # the loop commits now

    return handle


class AlertsWorker:
    """Owns the worker's long-lived parts and their order of start and stop."""

    def __init__(self, settings: Settings, *, build: ChannelBuilder = channels.build,
                 on_sent: OnSent | None = None) -> None:
        self.settings = settings
        client = state.connect(settings)
        self.producer = Producer(settings, client_id="alerts")
        self.recorder = Recorder(settings, self.producer, client=client)
        self.dispatcher = Dispatcher(settings, client, self.recorder, build=build, on_sent=on_sent)
        self.stories = StoryFolder(client, settings)
        planner = Planner(settings, client)
        held = DigestQueue(client, settings)
        self._by_topic: dict[str, list[Subscription]] = {}
        self._names: dict[str, str] = {}
        subs = registry.subscriptions(client, settings)
        subs.seed(settings.alerts.subscriptions)
        # Topic names head every notification; seeding the config's topics here too (idempotent) means the
        # first alert never shows a bare topic id because classify happened to seed them a moment later.
        topics = registry.topics(client, settings)
        topics.seed(settings.classify.topics)
        self._watchers: list[registry.Watcher[Any]] = [
                          registry.Watcher(subs, self._on_subscriptions),
                          registry.Watcher(topics, self._on_topics)]
        self.digests = DigestScheduler(settings, client, stories=self.stories,
                                       subscription=self.dispatcher.subscription,
                                       topic_name=lambda t: self._names.get(t, t), submit=self.dispatcher.submit)
        handle = pipeline(self.stories, planner, held, self.recorder, self.dispatcher,
                          lambda: self._by_topic, lambda: self._names)
        self.loop: ConsumerLoop[Match] = ConsumerLoop(
            settings, topics=[settings.kafka.topics.matches], group=role_group(settings, "alerts"),
            decode=lambda raw: decode(Match, raw), handle=handle, producer=self.producer,
            config=LoopConfig(batch_size=settings.alerts.batch_size, max_wait_ms=settings.alerts.max_wait_ms,
                              session_timeout_ms=settings.alerts.session_timeout_ms,
                              heartbeat_interval_ms=min(3000, settings.alerts.session_timeout_ms // 3),
                              extra={"group_instance_id": settings.alerts.group_instance_id}
                              if settings.alerts.group_instance_id else {}),
        )

    def _on_subscriptions(self, subs: list[Subscription]) -> None:
        by_topic: dict[str, list[Subscription]] = defaultdict(list)
        for s in subs:
            by_topic[s.topic_id].append(s)
        self.dispatcher.set_subscriptions(subs)
        self._by_topic = dict(by_topic)

    def _on_topics(self, topics: list[Topic]) -> None:
        self._names = {t.id: t.name for t in topics}

    def run(self) -> None:
        """Consume until :meth:`stop`; then finish sends in flight and flush the audit trail."""
        for w in self._watchers:
            w.start()
        self.recorder.start()
        self.dispatcher.start()
        self.digests.start()
        log.info("alerts_started", subscriptions=sum(len(v) for v in self._by_topic.values()))
        heap = HeapKeeper().start()
        try:
            self.loop.run()
        finally:
            heap.stop()
            for w in self._watchers:
                w.stop()
            self.digests.stop()
            self.dispatcher.stop()
            self.recorder.stop()
            self.producer.close()
            log.info("alerts_stopped")

    def stop(self) -> None:
        """Ask the worker to stop after the current batch."""
        self.loop.stop()
