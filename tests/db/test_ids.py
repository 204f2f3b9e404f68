"""``among``: long id lists written into the statement, and only values that cannot carry SQL
(SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import event, select

from poold.db.ids import among
from poold.db.models import NodeModel
from tests.builders import make_node, register_nodes


def _run(pool, query):
    statements: list[str] = []
    listen = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(pool.engine, "before_cursor_execute", listen)
    try:
        with pool.factory() as session:
            return sorted(session.scalars(query)), statements[-1]
    finally:
        event.remove(pool.engine, "before_cursor_execute", listen)


def test_ids_and_plain_names_are_written_in_and_anything_else_is_bound(pool):
    register_nodes(pool, make_node("gpu-1.rack_a"), make_node("gpu-2"), make_node("o'brien"))
    with pool.factory() as session:
        ids = {name: node_id for name, node_id in session.execute(select(NodeModel.name, NodeModel.id))}
    found, sql = _run(pool, select(NodeModel.name).where(among(NodeModel.id, [ids["gpu-2"], ids["gpu-1.rack_a"], 10**6])))
    assert found == ["gpu-1.rack_a", "gpu-2"] and str(ids["gpu-2"]) in sql
    found, sql = _run(pool, select(NodeModel.id).where(among(NodeModel.name, ["gpu-2", "gpu-1.rack_a"])))
    assert found == sorted([ids["gpu-2"], ids["gpu-1.rack_a"]]) and "'gpu-1.rack_a'" in sql
    found, sql = _run(pool, select(NodeModel.id).where(among(NodeModel.name, ["gpu-2", "o'brien"])))
    assert found == sorted([ids["gpu-2"], ids["o'brien"]]) and "brien" not in sql  # bound, not written in
    found, _ = _run(pool, select(NodeModel.id).where(among(NodeModel.id, [])))
    assert found == []
