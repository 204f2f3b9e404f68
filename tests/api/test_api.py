"""The HTTP API over both stores: agents' protocol, users' jobs, errors that name the field."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from poold.db.models import JobModel, NodeModel
from tests.api.calls import NOW, register, submit
from tests.auth import bearer, node_credential
from tests.builders import make_node

def test_register_heartbeat_assign_run_end(api):
    body = register(api, make_node("hgx").gpus(2, "H100", nvlink=18).mig(0, ["3g.40gb", "1g.10gb"]))
    job_id = submit(api, mig_profile="1g.10gb")
    assignments = api.get("/api/v1/agents/hgx/assignments").json()
    [assignment] = assignments["start"]
    assert assignment["job_id"] == job_id and assignment["command"] == ["sh", "-c", "echo hi"]
    [device] = assignment["devices"]
    assert device["uuid"].startswith("MIG-") and device["parent_uuid"] == body["devices"][0]["uuid"]

    events = {"events": [{"job_id": job_id, "kind": "started", "at": NOW, "pid": 42}]}
    assert api.post("/api/v1/agents/hgx/events", json=events).json()["results"][0]["accepted"]
    assert api.get("/api/v1/agents/hgx/assignments").json() == {"start": [], "cancel": [], "stop": []}
    assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "running"

    ended = {"events": [{"job_id": job_id, "kind": "ended", "at": NOW, "exit_code": 0, "outcome": "succeeded"}]}
    assert api.post("/api/v1/agents/hgx/events", json=ended).json()["results"][0]["accepted"]
    # the same report again (a retry after a lost answer) is fine; a different outcome is refused
    assert api.post("/api/v1/agents/hgx/events", json=ended).json()["results"][0]["accepted"]
    other = {"events": [{"job_id": job_id, "kind": "ended", "at": NOW, "exit_code": 1, "outcome": "failed"}]}
    refused = api.post("/api/v1/agents/hgx/events", json=other).json()["results"][0]
    assert not refused["accepted"] and "already ended as succeeded" in refused["reason"]
    detail = api.get(f"/api/v1/jobs/{job_id}").json()
    assert detail["state"] == "succeeded" and detail["exit_code"] == 0
    assert [e["kind"] for e in detail["events"]] == ["job.submitted", "job.placed", "job.started", "job.succeeded", "job.conflicting_outcome"]

    heartbeat = {"host": body["host"], "devices": body["devices"], "running_jobs": []}
    assert api.post("/api/v1/agents/hgx/heartbeat", json=heartbeat).json() == {"ok": True, "drained": False}


def test_heartbeat_from_a_node_the_store_does_not_hold_is_404(api, pool):
    """What makes an agent register again: its credential is good, its node is not there."""
    builder = make_node("ghost").gpus(1, "L4")
    body = {"host": builder.host.model_dump(mode="json"), "devices": [], "running_jobs": []}
    response = api.post("/api/v1/agents/ghost/heartbeat", json=body, headers=bearer(node_credential(pool.factory, "ghost")))
    assert response.status_code == 404 and "no node named 'ghost'" in response.json()["detail"]


def test_unhealthy_device_report_writes_event_and_blocks_placement(api):
    builder = make_node("l4").gpus(1, "L4")
    body = register(api, builder)
    body["devices"][0]["health"] = "unhealthy"
    body["devices"][0]["health_reason"] = "XID 79"
    api.post("/api/v1/agents/l4/heartbeat", json={"host": body["host"], "devices": body["devices"]})
    job_id = submit(api)
    job = api.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "pending" and "device_unhealthy" in job["reason"]
    devices = api.get("/api/v1/devices").json()
    assert devices[0]["health"] == "unhealthy" and devices[0]["health_reason"] == "XID 79"
    quarantine = devices[0]["quarantine"]
    assert (quarantine["reason"], quarantine["until"], quarantine["held"]) == ("XID 79", None, False)


def test_a_quarantined_device_is_shown_and_an_operator_returns_it(api):
    builder = make_node("l4").gpus(1, "L4")
    body = register(api, builder)
    uuid = body["devices"][0]["uuid"]
    assert api.post(f"/api/v1/devices/{uuid}/return").json()["detail"] == f"device {uuid} is not quarantined"
    body["devices"][0].update(health="unhealthy", health_reason="XID 79")
    api.post("/api/v1/agents/l4/heartbeat", json={"host": body["host"], "devices": body["devices"]})
    body["devices"][0].update(health="ok", health_reason=None)
    api.post("/api/v1/agents/l4/heartbeat", json={"host": body["host"], "devices": body["devices"]})
    [device] = api.get("/api/v1/devices").json()
    assert device["health"] == "ok" and device["quarantine"]["until"] is not None  # 300 s from now
    job_id = submit(api)
    assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "pending"
    returned = api.post(f"/api/v1/devices/{uuid}/return")
    assert returned.status_code == 200 and returned.json()["quarantine"] is None
    assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "assigned"  # the return woke the scheduler
    assert api.post("/api/v1/devices/GPU-nope/return").status_code == 404


def test_cancel_pending_and_running(api):
    register(api, make_node("l4").gpus(1, "L4"))
    running = submit(api)
    pending = submit(api)
    assert api.post(f"/api/v1/jobs/{pending}/cancel").json()["state"] == "cancelled"
    assert api.post(f"/api/v1/jobs/{pending}/cancel").status_code == 409
    assert api.post(f"/api/v1/jobs/{running}/cancel").json()["state"] == "assigned"
    assert api.get("/api/v1/agents/l4/assignments").json() == {"start": [], "cancel": [running], "stop": []}


def test_drain_and_undrain(api):
    register(api, make_node("l4").gpus(2, "L4"))
    drained = api.post("/api/v1/nodes/l4/drain", json={"reason": "maintenance"}).json()
    assert drained["drained"] and drained["drain_reason"] == "maintenance"
    job_id = submit(api)
    assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "pending"
    assert api.post("/api/v1/nodes/l4/undrain").json()["drained"] is False
    assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "assigned"
    assert api.post("/api/v1/nodes/nope/drain", json={}).status_code == 404
    assert api.get("/api/v1/nodes").json()[0]["devices_free"] == 1


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "x", "command": ["true"], "resources": {"count": "two"}}, "spec.resources.count"),
        ({"name": "x", "command": ["true"], "bogus": 1}, "spec.bogus"),
        ({"name": "x", "command": []}, "spec.command"),
        ({"command": ["true"]}, "spec.name"),
        ({"name": "x", "command": ["true"], "resources": {"share": 0.5, "count": 2}}, "spec.resources.share"),
        # NUL bytes: PostgreSQL text cannot hold them, and no process can be started with one
        ({"name": "x", "command": ["true"], "workdir": "/data/\x00run"}, "spec.workdir"),
        ({"name": "x", "command": ["sh", "-c", "echo \x00"]}, "spec.command.2"),
        ({"name": "x", "command": ["true"], "env": {"TOKEN": "a\x00b"}}, "spec.env.TOKEN"),
        ({"name": "x", "command": ["true"], "env": {"TO\x00KEN": "ab"}}, "spec.env.TO\x00KEN"),
        ({"name": "x", "command": ["true"], "user": "ro\x00ot"}, "spec.user"),
        ({"name": "x", "command": ["true"], "queue": "default\x00"}, "spec.queue"),
        ({"name": "x\x00", "command": ["true"]}, "spec.name"),
        ({"name": "x", "command": ["true"], "priority": 2**64}, "spec.priority"),
        ({"name": "x", "command": ["true"], "resources": {"nodes": 2, "share": 0.5}}, "spec.resources.share"),
        ({"name": "x", "command": ["true"], "resources": {"count": 2, "same_node": False, "mig_profile": "1g.10gb"}},
         "spec.resources.mig_profile"),
        ({"name": "x", "command": ["true"], "resources": {"nodes": 2, "same_node": True}}, "spec.resources.same_node"),
    ],
)
def test_invalid_submit_names_the_field_and_writes_nothing(api, pool, spec, field):
    response = api.post("/api/v1/jobs", json={"spec": spec})
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]
    assert field in response.json()["detail"]
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(JobModel)) == 0


def test_unknown_queue_is_refused(api):
    response = api.post("/api/v1/jobs", json={"spec": {"name": "x", "command": ["true"], "queue": "gold"}})
    assert response.status_code == 422 and "no queue named 'gold'" in response.json()["detail"]


def test_invalid_register_writes_nothing(api, pool):
    builder = make_node("bad").gpus(1, "L4")
    devices = [d.model_dump(mode="json") for d in builder.devices]
    devices[0]["kind"] = "tpu"
    response = api.post("/api/v1/agents/register", json={"node": "bad", "host": builder.host.model_dump(mode="json"), "devices": devices})
    assert response.status_code == 422 and "devices.0.kind" in response.json()["detail"]
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(NodeModel)) == 0


def test_logs_append_with_offsets(api):
    register(api, make_node("l4").gpus(1, "L4"))
    job_id = submit(api)
    put = lambda offset, data: api.put(f"/api/v1/jobs/{job_id}/log", params={"offset": offset, "node": "l4"}, content=data)  # noqa: E731
    assert put(0, b"hello ").json() == {"size": 6}
    mismatch = put(0, b"again")
    assert mismatch.status_code == 409 and mismatch.json()["size"] == 6
    assert put(6, b"world\n").json() == {"size": 12}
    assert api.get(f"/api/v1/jobs/{job_id}/log").content == b"hello world\n"
    assert api.get(f"/api/v1/jobs/{job_id}/log", params={"offset": 6}).content == b"world\n"
    assert api.get("/api/v1/jobs/999/log").status_code == 404


def test_openapi_is_served(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/v1/jobs", "/api/v1/agents/register", "/api/v1/nodes/{node}/drain"} <= set(paths)


def test_a_job_too_big_for_every_node_is_refused_pointing_at_gangs(api):
    register(api, make_node("hgx").gpus(8, "H100"))
    response = api.post("/api/v1/jobs", json={"spec": {"name": "x", "command": ["true"], "resources": {"count": 16}}})
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["spec.resources.count"]
    assert "ask nodes = N with count devices on each, or same_node = false" in response.json()["detail"]
    wider = {"name": "x", "command": ["true"], "resources": {"count": 8, "nodes": 2}}
    response = api.post("/api/v1/jobs", json={"spec": wider})
    assert response.status_code == 422 and [error["field"] for error in response.json()["errors"]] == ["spec.resources.nodes"]
    register(api, make_node("hgx-2").gpus(8, "H100"))
    response = api.post("/api/v1/jobs", json={"spec": wider})
    assert response.status_code == 201
    detail = api.get(f"/api/v1/jobs/{response.json()['id']}").json()
    assert detail["state"] == "assigned" and [p["rank"] for p in detail["parts"]] == [0, 1]
    assert {p["node"] for p in detail["parts"]} == {"hgx", "hgx-2"} and detail["node"] is None
