"""The API's contract: anything a caller sends gets a 4xx, never a 500; the OpenAPI document
describes the error bodies and statuses the routes return; times carry their zone (RFC 3339,
UTC) on SQLite as on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from poold.api.errors import ErrorOut
from tests.auth import bearer
from tests.builders import make_node

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc).isoformat()


@pytest.fixture
def job(api) -> int:
    builder = make_node("l4").gpus(1, "L4")
    body = {"node": "l4", "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices]}
    assert api.post("/api/v1/agents/register", json=body).status_code == 200
    response = api.post("/api/v1/jobs", json={"spec": {"name": "x", "command": ["true"]}})
    assert response.status_code == 201
    return response.json()["id"]


@pytest.mark.parametrize(
    ("method", "url", "status", "field"),
    [
        ("get", "/api/v1/jobs/99999999999999999999999", 422, "job_id"),
        ("post", "/api/v1/jobs/99999999999999999999999/cancel", 422, "job_id"),
        ("get", "/api/v1/jobs/9223372036854775807", 404, None),  # 64-bit, but past the jobs.id column
        ("get", "/api/v1/jobs/2147483648/log", 404, None),
        ("get", "/api/v1/jobs/{job}/log?offset=18446744073709551616", 422, "offset"),
        ("put", "/api/v1/jobs/{job}/log?offset=4611686018427387904&node=l4", 409, None),
        ("get", "/api/v1/jobs?limit=99999999999999999999", 422, "limit"),
        ("get", "/api/v1/devices?node=l%004", 422, "node"),
        ("post", "/api/v1/agents/l%004/heartbeat", 422, "node"),
        ("get", "/api/v1/agents/l%004/assignments", 422, "node"),
        ("post", "/api/v1/nodes/l%004/undrain", 422, "node"),
    ],
)
def test_what_a_caller_sends_gets_a_4xx_naming_the_field(api, job, method, url, status, field):
    # A valid token first: without one, the answer is 401 before anything else is looked at.
    headers = bearer(api.auth.nodes["l4"]) if "/agents/" in url else {}
    response = api.request(method, url.format(job=job), json={} if method == "post" else None, content=b"x" if method == "put" else None,
                           headers=headers)
    assert response.status_code == status, response.text
    body = ErrorOut.model_validate({k: v for k, v in response.json().items() if k != "size"})
    if field is not None:
        assert field in [error.field for error in body.errors]


def test_log_read_past_two_to_the_62_is_empty(api, job):
    response = api.get(f"/api/v1/jobs/{job}/log", params={"offset": 2**62})
    assert response.status_code == 200 and response.content == b""


def test_drain_reason_with_nul_is_refused(api, job):
    response = api.post("/api/v1/nodes/l4/drain", json={"reason": "disk\x00full"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "reason"


def test_event_for_a_job_id_past_the_column_is_refused_as_unknown(api, job):
    event = {"job_id": 2**40, "kind": "started", "at": NOW}
    [result] = api.post("/api/v1/agents/l4/events", json={"events": [event]}).json()["results"]
    assert not result["accepted"] and result["reason"] == f"no job {2**40}"


def zoned(value: str) -> datetime:
    """An RFC 3339 time with its zone; naive times fail here."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"{value} has no zone"
    return parsed


def test_times_carry_their_zone(api, job):
    event = {"job_id": job, "kind": "started", "at": NOW}
    assert api.post("/api/v1/agents/l4/events", json={"events": [event]}).json()["results"][0]["accepted"]
    detail = api.get(f"/api/v1/jobs/{job}").json()
    for key in ("submitted_at", "placed_at", "started_at"):
        zoned(detail[key])
    assert zoned(detail["started_at"]) == datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    for event in detail["events"]:
        zoned(event["at"])
    zoned(api.get("/api/v1/jobs").json()[0]["submitted_at"])
    zoned(api.get("/api/v1/nodes").json()[0]["last_heartbeat_at"])


def test_a_time_with_another_zone_is_stored_in_utc(api, job):
    event = {"job_id": job, "kind": "started", "at": "2026-11-21T14:00:00+02:00"}
    assert api.post("/api/v1/agents/l4/events", json={"events": [event]}).json()["results"][0]["accepted"]
    assert zoned(api.get(f"/api/v1/jobs/{job}").json()["started_at"]) == datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def test_openapi_describes_the_error_bodies_and_statuses(api):
    document = api.get("/openapi.json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's default 422 body, which we do not send
    assert set(schemas["ErrorOut"]["properties"]) == {"detail", "errors"}
    expected = {
        ("/api/v1/jobs", "post"): {"400", "422"},
        ("/api/v1/jobs/{job_id}", "get"): {"404", "422"},
        ("/api/v1/jobs/{job_id}/cancel", "post"): {"404", "409", "422"},
        ("/api/v1/jobs/{job_id}/log", "put"): {"404", "409", "422"},
        ("/api/v1/agents/register", "post"): {"400", "422"},
        ("/api/v1/agents/{node}/events", "post"): {"400", "404", "422"},
        ("/api/v1/nodes/{node}/drain", "post"): {"400", "404", "422"},
    }
    for (path, method), statuses in expected.items():
        answers = paths[path][method]["responses"]
        assert statuses <= set(answers), (path, method, set(answers))
        for status in statuses:
            ref = answers[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in ({"ErrorOut", "LogConflictOut"} if status == "409" else {"ErrorOut"})


@pytest.mark.parametrize("body", [b"{", b"[1,", b"\xff\xfe"])
def test_a_body_that_is_not_json_is_refused_as_such(api, body):
    response = api.post("/api/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "(body)" and error["message"].startswith("not JSON: ")
