"""Schemathesis against the app's own OpenAPI schema: no generated request gets a 5xx.

The app runs with its real lifespan (models, event log) inside one TestClient; schemathesis
generates valid and invalid requests for every operation and we send them through it.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode

MAX_EXAMPLES = 50


def _send(client: TestClient, case: Any) -> Any:
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    # The transport speaks `requests`: its body is `json` or raw `data`.
    content = kwargs.pop("data", None)
    return client.request(
        kwargs["method"],
        kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        json=kwargs.get("json"),
        content=content if content is None or isinstance(content, bytes | str) else str(content),
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(
    client: TestClient, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/rank", "/v1/events/{event_id}/reward"}
    for operation in operations:

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def no_5xx(case: Any) -> None:
            response = _send(client, case)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
            )

        try:
            no_5xx()
        except hypothesis.errors.Unsatisfiable:
            # Nothing to get wrong (e.g. GET /healthz has no inputs) in negative mode.
            assert mode is GenerationMode.NEGATIVE
            assert operation.path not in {"/v1/rank", "/v1/events/{event_id}/reward"}
