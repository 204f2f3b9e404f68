"""Every report is checked at the door: a device or host record, or a job event, that the store
could not hold or the scheduler could not read is refused with a 422 naming the field, and
nothing of it is written. Each case here used to be accepted (and then broke placement or the
store) or to answer 500."""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from poold.db.models import DeviceModel, NodeModel
from tests.builders import make_node

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc).isoformat()


@pytest.fixture
def node_body() -> dict:
    builder = make_node("hgx").gpus(2, "H100", nvlink=18).mig(0, ["3g.40gb", "1g.10gb"])
    return {
        "node": "hgx",
        "host": builder.host.model_dump(mode="json"),
        "devices": [d.model_dump(mode="json") for d in builder.devices],
        "agent_version": "test",
    }


def nested(depth: int) -> dict:
    tree: dict = {"leaf": 1}
    for _ in range(depth - 1):
        tree = {"x": tree}
    return tree


# (what the record says, where, the field the 422 must name)
BAD_DEVICES = [
    ("mig_slices as a word", lambda d: d[2]["attributes"].update(mig_slices="three"), "devices.2.attributes.mig_slices"),
    ("mig_slices beyond 7", lambda d: d[2]["attributes"].update(mig_slices=8), "devices.2.attributes.mig_slices"),
    ("mig_slices of 0", lambda d: d[2]["attributes"].update(mig_slices=0), "devices.2.attributes.mig_slices"),
    ("mig_profile as a number", lambda d: d[2]["attributes"].update(mig_profile=3), "devices.2.attributes.mig_profile"),
    ("compute_capability as a word", lambda d: d[0].update(compute_capability="nine"), "devices.0.compute_capability"),
    ("nvlink as a list", lambda d: d[0]["attributes"].update(nvlink=["GPU-x", 18]), "devices.0.attributes.nvlink"),
    ("nvlink count negative", lambda d: d[0]["attributes"].update(nvlink={"GPU-x": -1}), "devices.0.attributes.nvlink.GPU-x"),
    ("nvlink count as text", lambda d: d[0]["attributes"].update(nvlink={"GPU-x": "18"}), "devices.0.attributes.nvlink.GPU-x"),
    ("pcie as a list", lambda d: d[0]["attributes"].update(pcie=["system"]), "devices.0.attributes.pcie"),
    ("fpga_shell as a number", lambda d: d[0]["attributes"].update(fpga_shell=7), "devices.0.attributes.fpga_shell"),
    ("attribute nested 5 deep", lambda d: d[0]["attributes"].update(deep=nested(4)), "devices.0.attributes.deep.x.x.x"),
    ("attribute string of 2 KiB", lambda d: d[0]["attributes"].update(note="x" * 2048), "devices.0.attributes.note"),
    ("65 attribute keys", lambda d: d[0]["attributes"].update({f"k{i}": i for i in range(65)}), "devices.0.attributes"),
    ("attribute integer past 64 bits", lambda d: d[0]["attributes"].update(serial=2**64), "devices.0.attributes.serial"),
    ("NUL in an attribute", lambda d: d[0]["attributes"].update(serial="16\x0050"), "devices.0.attributes.serial"),
    ("NUL in an attribute key", lambda d: d[0]["attributes"].update({"se\x00rial": 1}), "devices.0.attributes"),
    ("NUL in the model", lambda d: d[0].update(model="H1\x0000"), "devices.0.model"),
    ("index past 32 bits", lambda d: d[0].update(index=2**31), "devices.0.index"),
    ("negative index", lambda d: d[0].update(index=-1), "devices.0.index"),
    ("memory past 64 bits", lambda d: d[0].update(memory_total_mib=2**64), "devices.0.memory_total_mib"),
    ("negative memory", lambda d: d[0].update(memory_free_mib=-5), "devices.0.memory_free_mib"),
    ("index as text", lambda d: d[0].update(index="0"), "devices.0.index"),
    ("bus id longer than its column", lambda d: d[0].update(bus_id="0000:17:00.0" * 4), "devices.0.bus_id"),
    ("power NaN", lambda d: d[0].update(power_w=math.nan), "devices.0.power_w"),
    ("temperature infinite", lambda d: d[0].update(temperature_c=math.inf), "devices.0.temperature_c"),
]


@pytest.mark.parametrize(("what", "spoil", "field"), BAD_DEVICES, ids=[case[0] for case in BAD_DEVICES])
def test_bad_device_record_is_refused_at_register_naming_the_field(api, pool, node_body, what, spoil, field):
    spoil(node_body["devices"])
    # json.dumps writes NaN and Infinity as Python's json.loads (the server's) reads them
    body = json.dumps(node_body)
    response = api.post("/api/v1/agents/register", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]], response.json()
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(NodeModel)) == 0


def test_bad_device_record_is_refused_at_heartbeat_and_the_node_keeps_its_devices(api, pool, node_body):
    assert api.post("/api/v1/agents/register", json=node_body).status_code == 200
    devices = copy.deepcopy(node_body["devices"])
    devices[2]["attributes"]["mig_slices"] = "three"
    response = api.post("/api/v1/agents/hgx/heartbeat", json={"host": node_body["host"], "devices": devices})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "devices.2.attributes.mig_slices"
    with pool.factory() as session:
        stored = session.scalars(select(DeviceModel.attributes)).all()
    assert sorted(a.get("mig_slices") for a in stored if "mig_slices" in a) == [1, 3]
    # and placement goes on over the stored devices
    job = api.post("/api/v1/jobs", json={"spec": {"name": "x", "command": ["true"], "resources": {"mig_profile": "3g.40gb"}}})
    assert api.get(f"/api/v1/jobs/{job.json()['id']}").json()["state"] == "assigned"


BAD_HOSTS = [
    ("cpu cores past 32 bits", {"cpu_cores": 2**40}, "host.cpu_cores"),
    ("negative memory", {"memory_total_mib": -1}, "host.memory_total_mib"),
    ("memory past 64 bits", {"memory_total_mib": 2**63}, "host.memory_total_mib"),
    ("NUL in the hostname", {"hostname": "hg\x00x"}, "host.hostname"),
    ("attributes nested 5 deep", {"attributes": {"os": nested(4)}}, "host.attributes.os.x.x.x"),
    ("numa node list of words", {"numa_nodes": {"0": ["zero"]}}, "host.numa_nodes.0.0"),
]


@pytest.mark.parametrize(("what", "change", "field"), BAD_HOSTS, ids=[case[0] for case in BAD_HOSTS])
def test_bad_host_record_is_refused_naming_the_field(api, node_body, what, change, field):
    node_body["host"].update(change)
    response = api.post("/api/v1/agents/register", json=node_body)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]], response.json()


def test_agent_version_longer_than_its_column_is_refused(api, node_body):
    response = api.post("/api/v1/agents/register", json=node_body | {"agent_version": "1." * 40})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "agent_version"


BAD_EVENTS = [
    ("job id past 64 bits", {"job_id": 2**64}, "events.0.job_id"),
    ("exit code past 32 bits", {"exit_code": 2**40, "kind": "ended"}, "events.0.exit_code"),
    ("NUL in the message", {"message": "chdir /w\x00d: no such file", "kind": "ended"}, "events.0.message"),
    ("a time without a zone", {"at": "2026-11-21T12:00:00"}, "events.0.at"),
    ("a time that leaves the calendar in UTC", {"at": "0001-01-01T00:00:00+14:00"}, "events.0.at"),
]


@pytest.mark.parametrize(("what", "change", "field"), BAD_EVENTS, ids=[case[0] for case in BAD_EVENTS])
def test_bad_job_event_is_refused_naming_the_field(api, node_body, what, change, field):
    assert api.post("/api/v1/agents/register", json=node_body).status_code == 200
    event = {"job_id": 1, "kind": "started", "at": NOW} | change
    response = api.post("/api/v1/agents/hgx/events", json={"events": [event]})
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]], response.json()

