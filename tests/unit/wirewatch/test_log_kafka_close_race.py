"""kafka-python's read of a socket that close() already dropped is logged as one warning line, no traceback;
every other error it logs keeps its traceback."""

from __future__ import annotations

import io
import logging

from wirewatch.log import configure


def _log_exception(logger: logging.Logger, exc: BaseException, msg: str) -> None:
    try:
        raise exc
    except BaseException:
        logger.exception(msg, "<KafkaTCPTransport [none] (closed)>")


def test_the_closed_socket_race_loses_its_traceback_and_other_errors_keep_theirs() -> None:
    out = io.StringIO()
    configure("warning", "json", stream=out)
    transport = logging.getLogger("kafka.net.transport")
    _log_exception(transport, AttributeError("'NoneType' object has no attribute 'recv'"),
                   "%s: Error receiving network data closing socket")
    race = out.getvalue()
    assert "Error receiving network data closing socket" in race and "socket already closed" in race
    assert "Traceback" not in race and race.startswith("WARNING:kafka.net.transport")
    out.seek(0), out.truncate()
    _log_exception(transport, OSError("connection reset"), "%s: Error receiving network data closing socket")
    _log_exception(transport, AttributeError("'Foo' object has no attribute 'bar'"), "%s: something else")
    other = out.getvalue()
    assert other.count("Traceback (most recent call last)") == 2 and other.count("ERROR:kafka.net.transport") == 2
    configure("warning", "json", stream=out)  # configuring twice adds the filter once
    assert sum(type(f).__name__ == "ClosedSocketRead" for f in transport.filters) == 1
