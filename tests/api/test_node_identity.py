"""A node's name belongs to the credential its agent made at its join, and that credential to
the machine it joined from: another machine is refused (403) while the credential stands;
once an admin revokes it, another machine may join under the name when the node is lost
(while it lives, 409 naming both machines)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import event, select, update

from poold.db.models import EventModel, NodeModel
from poold.db.session import transaction
from poold.services import recovery
from poold_common.tokens import make_token
from tests.api.calls import heartbeat, register
from tests.auth import bearer
from tests.builders import make_node


def join(api, builder, machine_id, credential=None):
    """A register with the join token, as another machine's agent would send it."""
    body = {"node": builder.name, "host": builder.host.model_dump(mode="json"), "machine_id": machine_id,
            "devices": [d.model_dump(mode="json") for d in builder.devices], "credential": credential or make_token()}
    return api.post("/api/v1/agents/register", json=body, headers=bearer(api.auth.site.join))


def test_a_second_machine_cannot_take_a_named_node(api):
    first, second = make_node("gpu-01").gpus(2, "L4"), make_node("gpu-01").gpus(1, "T4")
    register(api, first, machine_id="aaaa1111")
    refused = join(api, second, "bbbb2222")
    assert refused.status_code == 403 and refused.json()["errors"][0]["field"] == "node"
    assert refused.json()["detail"].startswith("node: node gpu-01 already has a credential (token ")
    # A join token reports for no node, and nothing of the stranger's inventory lands.
    assert heartbeat(api, second, machine_id="bbbb2222", headers=bearer(api.auth.site.join)).status_code == 403
    assert [d["model"] for d in api.get("/api/v1/devices").json()] == ["L4", "L4"]
    # The rightful agent goes on; its own credential from another machine is refused.
    assert heartbeat(api, first, machine_id="aaaa1111").status_code == 200
    register(api, first, machine_id="aaaa1111")  # again, with its credential
    body = {"node": "gpu-01", "host": first.host.model_dump(mode="json"), "devices": [], "machine_id": "cccc3333"}
    stolen = api.post("/api/v1/agents/register", json=body)
    assert stolen.status_code == 403 and stolen.json()["errors"][0]["field"] == "machine_id"
    assert heartbeat(api, first, machine_id="cccc3333").status_code == 409  # the node is machine aaaa1111's
    assert api.get("/api/v1/nodes").json()[0]["machine_id"] == "aaaa1111"


def test_a_join_sent_again_is_answered_as_before_and_uses_nothing(api, pool):
    """The answer to a join was lost: the agent sends the same join again, with the same credential."""
    builder = make_node("gpu-01").gpus(1, "L4")
    credential = make_token()
    assert join(api, builder, "aaaa1111", credential).status_code == 200
    uses = next(t["uses_left"] for t in api.get("/api/v1/tokens").json() if t["role"] == "join")
    assert join(api, builder, "aaaa1111", credential).status_code == 200
    assert next(t["uses_left"] for t in api.get("/api/v1/tokens").json() if t["role"] == "join") == uses
    assert heartbeat(api, builder, machine_id="aaaa1111", headers=bearer(credential)).status_code == 200


def test_a_revoked_credential_frees_the_name_for_another_machine_once_the_node_is_lost(api, pool):
    first, second = make_node("gpu-01").gpus(2, "L4"), make_node("gpu-01").gpus(1, "T4")
    register(api, first, machine_id="aaaa1111")
    heartbeat(api, first, running_jobs=[7], machine_id="aaaa1111")
    [credential] = api.get("/api/v1/tokens", params={"node": "gpu-01"}).json()
    assert api.post(f"/api/v1/tokens/{credential['id']}/revoke").json()["state"] == "revoked"
    assert heartbeat(api, first, machine_id="aaaa1111").status_code == 401  # the old agent is out
    alive = join(api, second, "bbbb2222")
    assert alive.status_code == 409 and "whose agent is alive" in alive.json()["detail"]
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).values(last_heartbeat_at=datetime.now(timezone.utc) - timedelta(hours=1)))
        assert recovery.mark_silent_nodes_lost(session, 30).nodes == ["gpu-01"]
    new = make_token()
    assert join(api, second, "bbbb2222", new).status_code == 200
    [node] = api.get("/api/v1/nodes").json()
    assert (node["state"], node["machine_id"]) == ("ready", "bbbb2222")
    assert [d["model"] for d in api.get("/api/v1/devices").json()] == ["T4"]
    assert api.get("/api/v1/agents/gpu-01/assignments", headers=bearer(new)).json()["cancel"] == []  # not the old machine's jobs
    with pool.factory() as session:
        kinds = [(e.kind, e.message) for e in session.scalars(select(EventModel).where(EventModel.node_id == 1).order_by(EventModel.id))]
    assert ("node.machine_changed", "node gpu-01 is now machine bbbb2222 (was aaaa1111, lost)") in kinds


def test_the_first_heartbeat_after_a_join_checks_its_credential_from_memory(api, pool):
    """The daemon wrote the credential at the join: thousands of nodes joining at once must not
    each cost a read of its token on their first heartbeat."""
    builder = make_node("gpu-01").gpus(1, "L4")
    credential = make_token()
    assert join(api, builder, "aaaa1111", credential).status_code == 200
    reads: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if "FROM tokens" in statement:
            reads.append(statement)

    event.listen(pool.engine, "before_cursor_execute", seen)
    try:
        assert heartbeat(api, builder, machine_id="aaaa1111", headers=bearer(credential)).status_code == 200
    finally:
        event.remove(pool.engine, "before_cursor_execute", seen)
    assert reads == []
    # A credential that does not match is still refused, from memory or not.
    wrong = credential[:-1] + ("A" if credential[-1] != "A" else "B")
    assert heartbeat(api, builder, machine_id="aaaa1111", headers=bearer(wrong)).status_code == 401
