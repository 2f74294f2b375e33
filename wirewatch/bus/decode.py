"""Step 2, decode: each polled record becomes a :class:`Consumed` value or a :class:`Rejected` one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from wirewatch import metrics
from wirewatch.bus.consumed import Consumed, Rejected
from wirewatch.records import RecordError

T = TypeVar("T")


def decode_all(
    group: str, decode: Callable[[bytes], T], records: list[Any]
) -> tuple[list[Consumed[T]], list[Rejected]]:
    """Split ``records`` into decoded items and ones for the DLQ (kind ``decode``), in their order.

    An empty value, or one ``decode`` refuses with :class:`wirewatch.records.RecordError` (bad JSON, unknown
    schema major), is rejected with the error as its reason. Any other exception from ``decode`` propagates:
    it is a bug, not a bad message. Counts every record in ``wirewatch_bus_consumed_total``.
    """
    good: list[Consumed[T]] = []
    bad: list[Rejected] = []
    for r in records:
        metrics.BUS_CONSUMED.labels(group, r.topic).inc()
        raw = r.value or b""
        headers = list(r.headers or [])
        try:
            if not raw:
                raise RecordError("empty message value")
            value = decode(raw)
        except RecordError as exc:
            bad.append(Rejected(r.topic, r.partition, r.offset, r.key, raw, headers, r.timestamp, "decode", str(exc)))
            continue
        good.append(Consumed(r.topic, r.partition, r.offset, r.key, value, r.timestamp, headers, raw))
    return good, bad
