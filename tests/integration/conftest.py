"""Fixtures shared by the integration tests (the services themselves are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingest_server import FeedServer


@pytest.fixture
def server() -> Iterator[FeedServer]:
    """A local feed server on 127.0.0.1 whose routes each test sets up."""
    s = FeedServer().start()
    try:
        yield s
    finally:
        s.stop()
