"""Schemathesis' state machine over the app's OpenAPI schema: sequences of calls that follow the links between
operations (a topic created, then read, changed, subscribed to, deleted), never a 5xx.

The links are the ones schemathesis infers from the schema (a created resource's ``id`` feeding the path
parameter of the operations on it), so the routes carry no ``links`` of their own. Bounded in examples and
steps; the live stream is left out (it never ends by design).
"""

from __future__ import annotations

import time
from typing import Any

import api_support
import pytest
import schemathesis
from api_support import Api
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis.stateful import run_state_machine_as_test

pytestmark = [pytest.mark.integration, pytest.mark.slow]
api, api_settings = api_support.api, api_support.api_settings


@pytest.mark.timeout(240)
def test_linked_call_sequences_never_get_a_5xx(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app, headers=api.h(api.admin))
    schema = schema.exclude(path="/v1/stream")
    base = schema.as_state_machine()
    failures: list[str] = []
    calls: dict[str, int] = {}
    started = time.monotonic()

    class Machine(base):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"X-API-Key": api.admin}}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            label = f"{case.method.upper()} {case.operation.path}"
            calls[label] = calls.get(label, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{label} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")

    run_state_machine_as_test(Machine, settings=hsettings(
        max_examples=15, stateful_step_count=5, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
    print(f"\nschemathesis stateful: {sum(calls.values())} calls over {len(calls)} operations in "
          f"{time.monotonic() - started:.0f}s")
    assert len(calls) > 3, calls
    assert failures == [], "\n".join(failures[:20])
