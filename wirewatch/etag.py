"""Optimistic concurrency over HTTP for the registry's records (topics, subscriptions, feeds).

A read answers ``ETag: "<version>"`` (the record's version in :mod:`wirewatch.registry`); a write may send
it back as ``If-Match`` and then succeeds only if nobody wrote in between, else 412 (read it again). A write
without ``If-Match`` still works: it is applied to the current record, retried if a concurrent write wins.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header, HTTPException, Response

IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=200,
                                       description='the ETag of the read this change is based on, e.g. "3"')]
_ONE = re.compile(r'^\s*"(\d{1,18})"\s*$')


def etag(version: int) -> str:
    """The ETag of a record at ``version``."""
    return f'"{version}"'


def expected(if_match: str | None) -> int | None:
    """The version ``If-Match`` asks for; None when absent or ``*`` (any current version).

    Raises:
        HTTPException: 412 for a value this API never gives out (a weak or foreign tag cannot match).
    """
    if if_match is None or if_match.strip() == "*":
        return None
    m = _ONE.match(if_match)
    if m is None:
        raise HTTPException(412, f"If-Match: {if_match[:60]!r} is not an ETag of this record (expected e.g. \"3\")")
    return int(m.group(1))


def tag(response: Response, version: int) -> None:
    """Set the ETag of ``response``."""
    response.headers["ETag"] = etag(version)
