"""Structured logging: JSON lines in services, readable console output on a terminal.

A log event is a constant name plus fields: ``log.info("feed_fetched", feed_id=..., status=304)``.
Fields whose names look secret (``secret``, ``password``, ``token``, ``authorization``...) are redacted.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

_SECRET_KEY = re.compile(r"(secret|password|passwd|token|authorization|api_key|apikey|signature)", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@", re.I)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key != "event" and _SECRET_KEY.search(key) and value not in (None, ""):
            event[key] = "***"
        elif isinstance(value, str) and "://" in value and "@" in value:
            event[key] = _URL_CREDENTIALS.sub(r"\g<scheme>***@", value)
    return event


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at write time (it is swapped by test runners and daemons)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "info", fmt: str = "auto", *, stream: Any = None) -> None:
    """Configure structlog and the standard library's logging for this process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when ``stream`` is a terminal).
    """
    out = stream or _CurrentStderr()
    use_console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())
    numeric = logging.getLevelName(level.upper())
    renderer: Any = structlog.dev.ConsoleRenderer(colors=use_console and out.isatty()) if use_console else (
        structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=out, force=True)
    # kafka-python is chatty at INFO about every connection; its warnings still come through.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    transport = logging.getLogger("kafka.net.transport")
    if not any(isinstance(f, ClosedSocketRead) for f in transport.filters):
        transport.addFilter(ClosedSocketRead())


class ClosedSocketRead(logging.Filter):
    """A socket read that raced ``close()``, logged as one warning line instead of an error with a traceback.

    kafka-python 3.0.12's IO thread may read a socket that ``close()`` has just dropped (``self._sock`` is
    None); it logs that with a traceback, then closes the connection as it should. Nothing is lost, it is a
    shutdown race. Keeping its traceback out means a traceback in a worker's log still means a fault.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the race's record in place; let every record through."""
        exc = record.exc_info[1] if record.exc_info else None
        if (isinstance(exc, AttributeError) and "'NoneType' object has no attribute 'recv'" in str(exc)
                and "Error receiving network data" in str(record.msg)):
            record.msg = f"{record.msg} (socket already closed: {exc})"
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger carrying ``component=name`` and any ``bound`` ids."""
    return structlog.get_logger(component=name, **bound)


def describe_error(exc: BaseException) -> str:
    """An exception as the ``error`` field of a log event and in a status line: ``"TypeName: message"``."""
    return f"{type(exc).__name__}: {exc}"
