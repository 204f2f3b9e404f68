"""Job, event and device listings name nodes by reading only the nodes they mention (a
listing of one job on a pool of thousands of nodes once read every node's name)."""

from __future__ import annotations

from sqlalchemy import event

from poold.api import convert
from poold.db.models import NodeModel
from tests.api.calls import register, submit
from tests.builders import make_node


def test_listings_name_the_nodes_of_what_they_list(api):
    register(api, make_node("a").gpus(1, "L4"))
    register(api, make_node("b").gpus(1, "L4"))
    job_id = submit(api)
    [listed] = [job for job in api.get("/api/v1/jobs").json() if job["id"] == job_id]
    assert listed["node"] in ("a", "b") and [a["node"] for a in listed["allocations"]] == [listed["node"]]
    assert api.get(f"/api/v1/jobs/{job_id}").json()["node"] == listed["node"]
    placed = [e for e in api.get(f"/api/v1/events?job={job_id}").json() if e["kind"] == "job.placed"]
    assert [e["node"] for e in placed] == [listed["node"]]


def test_a_listing_reads_the_names_of_its_own_nodes_only(api, pool):
    for name in ("a", "b", "c"):
        register(api, make_node(name).gpus(1, "L4"))
    job_id = submit(api)
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    event.listen(pool.engine, "before_cursor_execute", seen)
    try:
        assert api.get("/api/v1/jobs?state=pending&limit=1").json() == []
        assert api.get("/api/v1/jobs").json()[0]["id"] == job_id
    finally:
        event.remove(pool.engine, "before_cursor_execute", seen)
    reading_names = [s for s in statements if "nodes.name" in s and "FROM nodes" in s]
    # One read, for the one node of the one job listed; none for the empty listing.
    assert len(reading_names) == 1 and "WHERE nodes.id IN" in reading_names[0], reading_names


def test_node_names_skips_none_and_reads_in_pieces(pool):
    with pool.factory() as session:
        session.add_all([NodeModel(name=f"n{i}", hostname=f"n{i}", cpu_cores=1, memory_total_mib=1, host={}) for i in range(1, 1203)])
        session.commit()
        ids = list(session.scalars(NodeModel.__table__.select().with_only_columns(NodeModel.id)))
        names = convert.node_names(session, [*ids[:1201], None, ids[0]])
    assert len(names) == 1201 and ids[1201] not in names and names[ids[0]] == "n1"
