"""Bounded input: log chunks and whole logs, events per report and devices per node are
capped by ``limits.*``, refused with 413 naming the field; only the job's node may append
to its log."""

from __future__ import annotations

import pytest

from tests.api.calls import NOW, register, submit
from tests.auth import bearer
from tests.builders import make_node


@pytest.fixture
def settings(settings):
    settings.limits.request_bytes = 64 * 1024
    settings.limits.log_chunk_bytes = 1024
    settings.limits.job_log_bytes = 3000
    settings.limits.events_per_request = 3
    settings.limits.devices_per_node = 4
    return settings


def _field(response) -> str:
    return response.json()["errors"][0]["field"]


def test_a_log_chunk_past_the_limit_is_refused(api):
    register(api, make_node("l4").gpus(1, "L4"))
    job_id = submit(api, count=1)
    put = lambda data: api.put(f"/api/v1/jobs/{job_id}/log", params={"offset": 0, "node": "l4"}, content=data)  # noqa: E731
    refused = put(b"x" * 1025)
    assert refused.status_code == 413 and _field(refused) == "body" and "limits.log_chunk_bytes" in refused.json()["detail"]
    assert put(b"x" * 1024).json() == {"size": 1024}


def test_a_job_log_past_its_limit_is_refused_and_kept_whole(api):
    register(api, make_node("l4").gpus(1, "L4"))
    job_id = submit(api, count=1)
    for offset in (0, 1000, 2000):
        assert api.put(f"/api/v1/jobs/{job_id}/log", params={"offset": offset, "node": "l4"}, content=b"y" * 1000).status_code == 200
    refused = api.put(f"/api/v1/jobs/{job_id}/log", params={"offset": 3000, "node": "l4"}, content=b"z")
    assert refused.status_code == 413 and "limits.job_log_bytes" in refused.json()["detail"]
    assert api.get(f"/api/v1/jobs/{job_id}/log").content == b"y" * 3000


def test_only_the_node_running_a_job_may_append_to_its_log(api):
    register(api, make_node("l4").gpus(1, "L4"))
    register(api, make_node("other").gpus(1, "T4"))
    job_id = submit(api, count=1, accept=[{"model": "L4"}])
    refused = api.put(f"/api/v1/jobs/{job_id}/log", params={"offset": 0, "node": "other"}, content=b"forged")
    assert refused.status_code == 403 and _field(refused) == "node" and "runs on l4" in refused.json()["detail"]
    missing = api.put(f"/api/v1/jobs/{job_id}/log", params={"offset": 0}, content=b"who", headers=bearer(api.auth.nodes["l4"]))
    assert missing.status_code == 422 and _field(missing) == "node"
    assert api.get(f"/api/v1/jobs/{job_id}/log").content == b""


def test_too_many_events_in_one_report_are_refused(api):
    register(api, make_node("l4").gpus(1, "L4"))
    job_id = submit(api, count=1)
    events = [{"job_id": job_id, "kind": "started", "at": NOW}] * 4
    refused = api.post("/api/v1/agents/l4/events", json={"events": events})
    assert refused.status_code == 413 and _field(refused) == "events"
    assert api.post("/api/v1/agents/l4/events", json={"events": events[:3]}).status_code == 200


def test_a_node_with_too_many_devices_is_refused(api):
    builder = make_node("big").gpus(5, "L4")
    body = {"node": "big", "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices]}
    refused = api.post("/api/v1/agents/register", json=body)
    assert refused.status_code == 413 and _field(refused) == "devices"
    assert api.get("/api/v1/nodes").json() == []


def test_a_request_body_past_the_limit_is_refused_before_it_is_read(api):
    register(api, make_node("l4").gpus(1, "L4"))
    huge = b'{"host": {"hostname": "' + b"x" * (65 * 1024) + b'"}}'
    refused = api.post("/api/v1/agents/l4/heartbeat", content=huge, headers={"content-type": "application/json"})
    assert refused.status_code == 413 and _field(refused) == "body" and "limits.request_bytes" in refused.json()["detail"]
