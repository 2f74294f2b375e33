"""Kafka behind a small producer and a consumer loop: at-least-once, commit after success, DLQ for poison.

The loop's contract, per batch (:class:`ConsumerLoop`; each step is a module of this package):

1. poll up to ``batch_size`` records, waiting at most ``max_wait_ms`` to fill it (:mod:`.poll`);
2. decode each; undecodable ones (bad JSON, unknown schema major) are set aside for the DLQ (:mod:`.decode`);
3. call ``handle(batch)``. It performs the batch's side effects (produce outputs and wait for their acks,
   write Redis...) and returns the items it rejects as poison, with a reason (:mod:`.handle`);
4. produce rejected and undecodable items to ``<topic>.dlq`` (original key and bytes, error headers),
   retrying with backoff while the DLQ cannot be written (the batch waits, uncommitted) (:mod:`.deadletter`);
5. commit the batch's offsets. Only then is the batch done (:mod:`.commit`).

What an exception from ``handle`` (or from Kafka itself) means is decided once, in :mod:`wirewatch.faults`:
a transient one (Kafka, Redis or the network unreachable or busy) retries the whole batch with capped
exponential backoff and never commits it; a fatal one (authorization, credentials, permissions) stops the
loop with :class:`WorkerFatal` naming who refused what; any other is taken as a poison item hiding in the
batch: the batch is retried item by item and the items that still raise go to the DLQ. A rebalance while
a batch is in flight drops the batch uncommitted (the new owner re-reads it; :mod:`.rebalance`). If nearly
everything recently went to the DLQ (``dlq_max_ratio``), the loop stops with :class:`DlqRatioExceeded`
before committing, so a broken deployment does not drain a topic into its DLQ.

Producing is :class:`Producer` (:mod:`.produce`), topic administration :func:`ensure_default_topics`
(:mod:`.topics`), and the names roles share (group ids, replay headers) are in :mod:`.names`.
"""

from wirewatch.bus.config import LoopConfig
from wirewatch.bus.consumed import Consumed, Handler
from wirewatch.bus.deadletter import DlqRatioExceeded
from wirewatch.bus.loop import ConsumerLoop
from wirewatch.bus.names import (
    REPLAY_HEADER,
    REPLAY_SOURCE_HEADER,
    REPLAY_TOPIC_HEADER,
    ROLES,
    client_config,
    role_group,
    role_groups,
)
from wirewatch.bus.produce import Outgoing, Producer
from wirewatch.bus.topics import ensure_default_topics, ensure_topics
from wirewatch.faults import ProduceError, WorkerFatal  # defined with the error kinds in wirewatch.faults

__all__ = [
    "REPLAY_HEADER",
    "REPLAY_SOURCE_HEADER",
    "REPLAY_TOPIC_HEADER",
    "ROLES",
    "Consumed",
    "ConsumerLoop",
    "DlqRatioExceeded",
    "Handler",
    "LoopConfig",
    "Outgoing",
    "ProduceError",
    "Producer",
    "WorkerFatal",
    "client_config",
    "ensure_default_topics",
    "ensure_topics",
    "role_group",
    "role_groups",
]
