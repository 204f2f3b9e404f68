"""A node's name belongs to one machine while the node lives: a second agent claiming it from
another machine is refused with 409, naming the node and both machine ids; once the node is
lost, another machine may take the name."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from poold.db.models import EventModel, NodeModel
from poold.db.session import transaction
from poold.services import recovery
from tests.api.calls import heartbeat, register
from tests.builders import make_node


def post_register(api, builder, machine_id):
    body = {"node": builder.name, "host": builder.host.model_dump(mode="json"),
            "devices": [d.model_dump(mode="json") for d in builder.devices], "machine_id": machine_id}
    return api.post("/api/v1/agents/register", json=body)


def test_a_second_machine_cannot_take_a_live_nodes_name(api):
    first, second = make_node("gpu-01").gpus(2, "L4"), make_node("gpu-01").gpus(1, "T4")
    register(api, first, machine_id="aaaa1111")
    refused = post_register(api, second, "bbbb2222")
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail.startswith("node gpu-01 belongs to machine aaaa1111, whose agent is alive (last heartbeat ")
    assert "this agent runs on machine bbbb2222" in detail
    # Its heartbeats are refused too, and nothing of its inventory lands.
    beat = heartbeat(api, second, machine_id="bbbb2222")
    assert beat.status_code == 409
    assert beat.json()["detail"] == "node gpu-01 belongs to machine aaaa1111; this report comes from machine bbbb2222"
    assert [d["model"] for d in api.get("/api/v1/devices").json()] == ["L4", "L4"]
    # Nor does it get work.
    assert api.get("/api/v1/agents/gpu-01/assignments", params={"machine_id": "bbbb2222"}).status_code == 409
    # The rightful agent goes on.
    assert api.get("/api/v1/agents/gpu-01/assignments", params={"machine_id": "aaaa1111"}).status_code == 200
    assert heartbeat(api, first, machine_id="aaaa1111").status_code == 200
    assert post_register(api, first, "aaaa1111").status_code == 200
    assert api.get("/api/v1/nodes").json()[0]["machine_id"] == "aaaa1111"


def test_once_the_node_is_lost_another_machine_may_take_the_name(api, pool):
    first, second = make_node("gpu-01").gpus(2, "L4"), make_node("gpu-01").gpus(1, "T4")
    register(api, first, machine_id="aaaa1111")
    heartbeat(api, first, running_jobs=[7], machine_id="aaaa1111")
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).values(last_heartbeat_at=datetime.now(timezone.utc) - timedelta(hours=1)))
        assert recovery.mark_silent_nodes_lost(session, 30).nodes == ["gpu-01"]
    assert post_register(api, second, "bbbb2222").status_code == 200
    [node] = api.get("/api/v1/nodes").json()
    assert (node["state"], node["machine_id"]) == ("ready", "bbbb2222")
    assert [d["model"] for d in api.get("/api/v1/devices").json()] == ["T4"]
    assert api.get("/api/v1/agents/gpu-01/assignments").json()["cancel"] == []  # not the old machine's jobs
    with pool.factory() as session:
        kinds = [(e.kind, e.message) for e in session.scalars(select(EventModel).where(EventModel.node_id == 1).order_by(EventModel.id))]
    assert ("node.machine_changed", "node gpu-01 is now machine bbbb2222 (was aaaa1111, lost)") in kinds
    # Now the old machine is the stranger.
    assert heartbeat(api, first, machine_id="aaaa1111").status_code == 409


def test_agents_that_send_no_machine_id_are_let_be_and_the_first_id_sent_is_kept(api):
    builder = make_node("old").gpus(1, "L4")
    register(api, builder)  # an agent from before machine ids
    assert post_register(api, builder, None).status_code == 200
    assert heartbeat(api, builder).status_code == 200
    assert heartbeat(api, builder, machine_id="cccc3333").status_code == 200  # upgraded: its id is kept
    assert api.get("/api/v1/nodes").json()[0]["machine_id"] == "cccc3333"
    assert post_register(api, builder, "dddd4444").status_code == 409
