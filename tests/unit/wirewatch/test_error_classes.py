"""What each error means to a consumer loop (wirewatch.faults): retry, stop the worker, or park the record."""

from __future__ import annotations

import errno

import pytest
import redis
from kafka import errors as kafka_errors

from wirewatch.faults import FATAL, PERMANENT, TRANSIENT, ProduceError, fatal, kind_of


def _produce_error(cause: Exception) -> ProduceError:
    try:
        raise ProduceError("not acknowledged") from cause
    except ProduceError as exc:
        return exc


@pytest.mark.parametrize(("error", "kind"), [
    (kafka_errors.KafkaConnectionError("down"), TRANSIENT),
    (kafka_errors.NotLeaderForPartitionError(), TRANSIENT),
    (kafka_errors.KafkaTimeoutError(), TRANSIENT),
    (kafka_errors.TopicAuthorizationFailedError("t"), FATAL),
    (kafka_errors.GroupAuthorizationFailedError("g"), FATAL),
    (kafka_errors.SaslAuthenticationFailedError(), FATAL),
    (kafka_errors.MessageSizeTooLargeError(), PERMANENT),
    (_produce_error(kafka_errors.TopicAuthorizationFailedError("t")), FATAL),
    (_produce_error(kafka_errors.KafkaTimeoutError()), TRANSIENT),
    (_produce_error(kafka_errors.MessageSizeTooLargeError()), PERMANENT),
    (ProduceError("no cause"), TRANSIENT),
    (redis.ConnectionError("refused"), TRANSIENT),
    (redis.TimeoutError(), TRANSIENT),
    (redis.BusyLoadingError(), TRANSIENT),
    (redis.ReadOnlyError(), TRANSIENT),
    (redis.AuthenticationError("WRONGPASS"), FATAL),
    (redis.exceptions.NoPermissionError("NOPERM"), FATAL),
    (redis.ResponseError("WRONGTYPE"), PERMANENT),
    (PermissionError(errno.EACCES, "denied"), FATAL),
    (ConnectionRefusedError(), TRANSIENT),
    (TimeoutError(), TRANSIENT),
    (OSError(errno.ENOSPC, "disk full"), TRANSIENT),
    (OSError(errno.EHOSTUNREACH, "no route"), TRANSIENT),
    (FileNotFoundError(errno.ENOENT, "gone"), PERMANENT),
    (ValueError("bad record"), PERMANENT),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_kind_of(error: Exception, kind: str) -> None:
    assert kind_of(error) == kind


def test_the_fatal_message_says_who_refused_what_after_how_many_attempts() -> None:
    msg = str(fatal("wirewatch-alerts", "committing offsets",
                    _produce_error(kafka_errors.GroupAuthorizationFailedError("wirewatch-alerts")), 3))
    assert msg.startswith("consumer group wirewatch-alerts: committing offsets failed with GroupAuthorization")
    assert "after 3 attempt(s)" in msg and "ACLs" in msg
