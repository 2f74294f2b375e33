"""Schemathesis against the app's own OpenAPI schema: generated requests (valid and not) never get a 5xx.

Bounded: at most 20 examples per operation. The live stream is left out (it never ends by design); its
behaviour is tested in test_api_core.
"""

from __future__ import annotations

from typing import Any

import api_support
import pytest
import schemathesis
from api_support import Api
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
api, api_settings = api_support.api, api_support.api_settings
EXAMPLES = 20


def test_generated_requests_never_get_a_5xx(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app, headers=api.h(api.admin))
    failures: list[str] = []
    calls: dict[str, int] = {}
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        op: Any = result.ok()
        if op.path == "/v1/stream":
            continue
        _check(op, f"{op.method.upper()} {op.path}", api, calls, statuses, failures)
    assert calls, "the schema has operations"
    print(f"\nschemathesis: {sum(calls.values())} requests over {len(calls)} operations; "
          f"statuses {sorted(statuses.items())}")
    assert failures == [], "\n".join(failures[:20])


def _check(op: Any, label: str, api: Api, calls: dict[str, int], statuses: dict[int, int],
       failures: list[str]) -> None:
    @given(case=op.as_strategy())
    @hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
               derandomize=True, database=None)
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers={"X-API-Key": api.admin})
        calls[label] = calls.get(label, 0) + 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300} -> "
                            f"{response.status_code}: {response.text[:300]}")

    run()
