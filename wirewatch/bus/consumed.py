"""What the consumer loop hands a handler (:class:`Consumed`) and what it sets aside for the DLQ (:class:`Rejected`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Consumed(Generic[T]):
    """A decoded record with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: T
    timestamp_ms: int
    headers: Sequence[tuple[str, bytes]]
    raw: bytes


Handler = Callable[[list[Consumed[T]]], Sequence[tuple[Consumed[T], str]] | None]
"""Performs a batch's side effects and returns the items it rejects as poison, each with a reason.

It returns only once the side effects are done (outputs acknowledged, Redis written); what it raises is
classified by :mod:`wirewatch.faults` (see :class:`wirewatch.bus.handle.RetryingHandler`).
"""


@dataclass
class Rejected:
    """A record bound for the DLQ: its original bytes and headers, and why (``kind``: decode, rejected, handler)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int
    kind: str
    reason: str

    @classmethod
    def of(cls, c: Consumed[T], kind: str, reason: str) -> Rejected:
        """``c`` rejected for ``reason``."""
        return cls(c.topic, c.partition, c.offset, c.key, c.raw, c.headers, c.timestamp_ms, kind, reason)
