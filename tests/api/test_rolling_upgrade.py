"""Rolling upgrades, daemon side: a newer agent's messages (fields this daemon does not know)
are accepted, and a protocol version the daemon cannot serve is refused naming both."""

from __future__ import annotations

from datetime import datetime, timezone

from poold_wire.messages import PROTOCOL_VERSION
from tests.builders import make_node

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc).isoformat()


def newer_agent_register(name: str) -> dict:
    """What an agent of a later release might send: same protocol, fields added everywhere."""
    builder = make_node(name).gpus(2, "H100", nvlink=18)
    host = builder.host.model_dump(mode="json") | {"machine_id": "4c4c4544-0032", "kernel_cmdline": "quiet"}
    devices = [d.model_dump(mode="json") | {"serial": "1650", "pcie_generation": 5} for d in builder.devices]
    return {
        "node": name,
        "host": host,
        "devices": devices,
        "agent_version": "9.9.0",
        "protocol_version": PROTOCOL_VERSION,
        "capabilities": ["reconcile", "outbox-v2"],
    }


def test_newer_agent_registers_heartbeats_and_reports(api):
    body = newer_agent_register("hgx")
    response = api.post("/api/v1/agents/register", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["node"] == "hgx"

    heartbeat = {"host": body["host"], "devices": body["devices"], "running_jobs": [], "uptime_s": 12.5}
    response = api.post("/api/v1/agents/hgx/heartbeat", json=heartbeat)
    assert response.status_code == 200, response.text

    job = api.post("/api/v1/jobs", json={"spec": {"name": "x", "command": ["true"]}}).json()["id"]
    event = {"job_id": job, "kind": "started", "at": NOW, "pid": 7, "cgroup": "/poold/7"}
    response = api.post("/api/v1/agents/hgx/events", json={"events": [event], "batch": 1})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["accepted"]
    [device] = [d for d in api.get("/api/v1/devices").json() if d["uuid"] == body["devices"][0]["uuid"]]
    assert device["model"] == "H100"  # the known fields were read and stored


def test_agent_without_protocol_version_speaks_protocol_1(api):
    body = newer_agent_register("old")
    del body["protocol_version"]
    assert api.post("/api/v1/agents/register", json=body).status_code == 200


def test_newer_protocol_is_refused_naming_both_versions(api):
    version = PROTOCOL_VERSION + 1
    body = newer_agent_register("future") | {"protocol_version": version}
    response = api.post("/api/v1/agents/register", json=body)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert f"protocol {version}" in detail and f"protocol {PROTOCOL_VERSION}" in detail and "upgrade the daemon" in detail
    assert response.json()["errors"] == [{"field": "protocol_version", "message": detail.removeprefix("protocol_version: ")}]
    assert api.get("/api/v1/nodes").json() == []  # nothing registered


def test_protocol_zero_is_refused(api):
    body = newer_agent_register("zero") | {"protocol_version": 0}
    response = api.post("/api/v1/agents/register", json=body)
    assert response.status_code == 422 and "protocol_version" in response.json()["detail"]
