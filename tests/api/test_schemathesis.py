"""schemathesis over the live API app on SQLite and on PostgreSQL: for generated requests,
valid and invalid, no answer is a 5xx, and every answer (status, content type, body) is one
the OpenAPI document describes. Requests carry an admin's token, and on agent routes and log
uploads the seeded node's credential, so they get past the door. A bounded run: ``EXAMPLES``
per operation, generation mode and store, from a fixed seed (derandomized), so a run is
repeatable."""

from __future__ import annotations

import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from tests.auth import bearer
from tests.builders import make_node

EXAMPLES = 60
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def seeded(api: TestClient) -> TestClient:
    """A node with GPUs and MIG slices and a placed job, so that generated ids and names can hit."""
    builder = make_node("n1").gpus(2, "H100", nvlink=18).mig(0, ["3g.40gb", "1g.10gb"])
    body = {"node": "n1", "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices]}
    assert api.post("/api/v1/agents/register", json=body).status_code == 200
    assert api.post("/api/v1/jobs", json={"spec": {"name": "seed", "command": ["true"]}}).status_code == 201
    return api


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_answers_as_documented(seeded: TestClient, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", seeded.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    if mode is GenerationMode.NEGATIVE:  # nothing to get wrong in a request without parameters or body
        operations = [op for op in operations if list(op.iter_parameters()) or op.get_request_payload_content_types()]
    started, calls = time.monotonic(), 0
    for operation in operations:
        agents = operation.path.startswith("/api/v1/agents/{node}") or (operation.method.upper(), operation.path) == ("PUT", "/api/v1/jobs/{job_id}/log")
        headers = bearer(seeded.auth.nodes["n1"] if agents else seeded.auth.site.admin)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def answers_as_documented(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(checks=CHECKS, headers=headers)

        answers_as_documented()
    print(f"schemathesis {mode.value}: {calls} calls over {len(operations)} operations in {time.monotonic() - started:.1f} s")
