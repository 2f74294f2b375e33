"""What an error means for a consumer loop: retry it, park the record, or stop the worker.

Decided here, once, at the edge where Kafka, Redis and the operating system hand us their errors:

- ``TRANSIENT``: the service is unreachable, busy or failing over; the same call can succeed later. Kafka
  errors whose class says ``retriable``; Redis connection, timeout, loading, try-again and read-only
  (fail-over) errors; network ``OSError``s and resource exhaustion (connection refused or reset, host
  unreachable, timeouts, ``EAGAIN``, ``ENOSPC``, ``EMFILE``...). The loop retries with backoff.
- ``FATAL``: retrying cannot help and every record would fail the same way: Kafka authorization and
  authentication failures, Redis ``NOAUTH``/``WRONGPASS``/``NOPERM``, ``PermissionError``. The loop stops
  with :class:`WorkerFatal`, whose message says who refused what, so an operator fixes credentials or ACLs
  instead of watching a partition stall.
- ``PERMANENT``: anything else, including non-retriable Kafka errors (a record too large) and Redis
  command errors (``WRONGTYPE``): something about this record. The loop finds the record and parks it in
  the DLQ; the others of its batch go on.

A :class:`ProduceError` is judged by the Kafka error that caused it.
"""

from __future__ import annotations

import errno
from typing import Literal

import redis
from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError

Kind = Literal["transient", "fatal", "permanent"]
TRANSIENT: Kind = "transient"
FATAL: Kind = "fatal"
PERMANENT: Kind = "permanent"


class ProduceError(RuntimeError):
    """Kafka did not acknowledge a produced batch in time; nothing may be committed on its behalf."""


class WorkerFatal(RuntimeError):
    """An error that retrying cannot fix (authorization, credentials, permissions); the worker stops."""


_REDIS_FATAL = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
                redis.exceptions.NoPermissionError, redis.exceptions.AuthenticationWrongNumberOfArgsError)
_REDIS_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
                    redis.exceptions.TryAgainError, redis.exceptions.ReadOnlyError,
                    redis.exceptions.ClusterDownError, redis.exceptions.MasterDownError)
_OS_TRANSIENT_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ENOSPC, errno.EMFILE,
    errno.ENFILE, errno.ENOMEM, errno.ENOBUFS,
})


def kind_of(exc: BaseException) -> Kind:
    """How a consumer loop treats ``exc``; see the module docstring."""
    if isinstance(exc, ProduceError) and isinstance(exc.__cause__, KafkaError):
        exc = exc.__cause__
    if isinstance(exc, ProduceError):
        return TRANSIENT
    if isinstance(exc, KafkaError):
        if isinstance(exc, AuthorizationError | SaslAuthenticationFailedError):
            return FATAL
        return TRANSIENT if getattr(exc, "retriable", False) else PERMANENT
    if isinstance(exc, redis.RedisError):
        if isinstance(exc, _REDIS_FATAL):  # before the transient ones: AuthenticationError is a ConnectionError
            return FATAL
        return TRANSIENT if isinstance(exc, _REDIS_TRANSIENT) else PERMANENT
    if isinstance(exc, PermissionError):
        return FATAL
    if isinstance(exc, ConnectionError | TimeoutError):
        return TRANSIENT
    if isinstance(exc, OSError):
        return TRANSIENT if exc.errno in _OS_TRANSIENT_ERRNOS else PERMANENT
    return PERMANENT


def fatal(group: str, where: str, exc: BaseException, attempts: int = 1) -> WorkerFatal:
    """The error a loop stops with: who refused what, and what to check."""
    cause = exc.__cause__ if isinstance(exc, ProduceError) and exc.__cause__ is not None else exc
    return WorkerFatal(
        f"consumer group {group}: {where} failed with {type(cause).__name__}: {cause} after {attempts} "
        f"attempt(s); retrying cannot fix this, stopping the worker (check the credentials, ACLs and file "
        f"permissions it runs with)"
    )
