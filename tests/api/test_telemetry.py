"""Heartbeats out of the transaction path: a repeated report touches no row, usage stays in
memory, seen marks are flushed in one statement, and SQLite reads take no write lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update

from poold import telemetry
from poold.api.app import create_app
from poold.api.context import AppContext
from poold.db.models import Base, DeviceModel, NodeModel
from poold.db.session import make_engine, make_sessionmaker, reading, transaction
from tests.api.calls import heartbeat, register, report, submit
from tests.auth import authorised
from tests.builders import make_node


@pytest.fixture
def ctx(pool, settings):
    """No pass runs here: heartbeats alone."""
    return AppContext.build(settings, pool.factory)


def _body(builder, **usage):
    devices = []
    for device in builder.devices:
        record = device.model_dump(mode="json")
        record.update(usage)
        devices.append(record)
    return {"host": builder.host.model_dump(mode="json"), "devices": devices, "running_jobs": [], "machine_id": "m-1"}


def _register(api, builder):
    body = _body(builder)
    response = api.post("/api/v1/agents/register", json={"node": builder.name, "host": body["host"], "devices": body["devices"],
                                                          "machine_id": "m-1"})
    assert response.status_code == 200, response.text


def _writes(engine):
    """Count the statements that change rows (INSERT/UPDATE/DELETE) while the block runs."""
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return statements, lambda: event.remove(engine, "before_cursor_execute", record)


def _writes_of(pool, call) -> list[str]:
    statements, stop = _writes(pool.engine)
    try:
        call()
    finally:
        stop()
    return statements


def test_a_repeated_heartbeat_writes_nothing_and_its_usage_is_served_from_memory(api, ctx, pool):
    builder = make_node("hgx").gpus(2, "H100", nvlink=18)
    _register(api, builder)
    assert api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=10.0)).status_code == 200  # new: written
    statements, stop = _writes(pool.engine)
    try:
        for load in (55.0, 97.0):
            response = api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=load, temperature_c=70.0, memory_free_mib=1000))
            assert response.status_code == 200 and response.json()["drained"] is False
    finally:
        stop()
    assert statements == []
    devices = api.get("/api/v1/devices").json()
    assert {d["utilization_pct"] for d in devices} == {97.0}
    assert {d["memory_free_mib"] for d in devices} == {1000}


def test_a_heartbeat_that_says_something_new_is_written(api, pool):
    builder = make_node("hgx").gpus(2, "H100", nvlink=18)
    _register(api, builder)
    api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder))
    body = _body(builder)
    body["devices"][0].update(health="unhealthy", health_reason="XID 79: fell off the bus")
    assert api.post("/api/v1/agents/hgx/heartbeat", json=body).status_code == 200
    with pool.factory() as session:
        health = dict(session.execute(select(DeviceModel.uuid, DeviceModel.health)).all())
    assert health[builder.devices[0].uuid] == "unhealthy"


def test_seen_marks_are_flushed_and_the_drain_flag_read_back(api, ctx, pool):
    builder = make_node("hgx").gpus(1, "L4")
    _register(api, builder)
    api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder))
    with pool.factory() as session:
        before = session.scalar(select(NodeModel.last_heartbeat_at))
    time.sleep(0.01)
    api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=5.0))  # from memory
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).values(drained=True))  # drained through another replica
        assert ctx.reports.flush(session) == 1
    with pool.factory() as session:
        assert session.scalar(select(NodeModel.last_heartbeat_at)) > before
    response = api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=6.0))
    assert response.json()["drained"] is True


def test_a_node_marked_lost_meanwhile_is_written_in_full_again(api, ctx, pool):
    builder = make_node("hgx").gpus(1, "L4")
    _register(api, builder)
    api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder))
    api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=5.0))  # from memory
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).values(state="down"))  # the lost-node check ran elsewhere
        ctx.reports.flush(session)
    api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=6.0))
    with pool.factory() as session:
        assert session.scalar(select(NodeModel.state)) == "ready"


def test_sqlite_reads_take_no_write_lock(tmp_path):
    """(PostgreSQL readers never wait for writers; SQLite's would, in a write transaction.)"""
    engine = make_engine(f"sqlite:///{tmp_path / 'poold.db'}")
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    holding, release = threading.Event(), threading.Event()

    def writer():
        with transaction(factory) as session:
            session.execute(select(NodeModel.id))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with reading(factory) as session:
            assert session.execute(select(NodeModel.id)).all() == []
        assert time.monotonic() - started < 1.0
        raw = sqlite3.connect(engine.url.database, timeout=0.1)
        with pytest.raises(sqlite3.OperationalError):  # while a write transaction would wait
            raw.execute("BEGIN IMMEDIATE")
        raw.close()
    finally:
        release.set()
        thread.join()
        engine.dispose()


@contextmanager
def _placing(pool, settings):
    """An API whose submits are placed at once, a node timeout of 0.3 s, and one registered node with an L4."""
    settings.nodes.timeout_s = 0.3
    ctx = AppContext.build(settings, pool.factory)
    ctx.wake_scheduler = ctx.scheduler.run_pass
    with authorised(TestClient(create_app(ctx)), pool.factory) as api:
        builder = make_node("hgx").gpus(1, "L4")
        register(api, builder)
        yield ctx, api, builder


def test_a_running_job_the_agent_stopped_listing_is_lost_though_its_heartbeats_repeat(pool, settings):
    """Repeated heartbeats are answered from memory, except while a running job is missing
    from them: those are written, so that one of them loses the job once its grace is over."""
    with _placing(pool, settings) as (ctx, api, builder):
        job_id = submit(api, count=1)
        assert heartbeat(api, builder, running_jobs=[job_id]).status_code == 200  # adopted: running
        assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "running"
        for _ in range(3):  # the same report (no job) again and again, past the grace
            assert heartbeat(api, builder).status_code == 200
            time.sleep(0.2)
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        assert job["state"] == "lost" and job["requeued_as"] is not None


def test_the_heartbeat_after_register_is_answered_from_memory(api, pool):
    """Register remembers its report as the heartbeat that says the same: an agent's first
    heartbeat (a field left out or sent as null alike) writes nothing."""
    builder = make_node("hgx").gpus(2, "H100", nvlink=18)
    _register(api, builder)
    body = _body(builder, utilization_pct=12.0)
    body["devices"] = [{key: value for key, value in device.items() if value is not None} for device in body["devices"]]  # left out
    statements, stop = _writes(pool.engine)
    try:
        assert api.post("/api/v1/agents/hgx/heartbeat", json=body).status_code == 200
    finally:
        stop()
    assert statements == []


def test_a_report_another_replica_wrote_meanwhile_is_written_in_full_again(api, ctx, pool):
    """Each replica remembers the report it wrote; the node row says which report the store
    holds. Once another replica has written a newer one, this one's next heartbeat is written
    in full, not answered from a memory the store no longer agrees with."""
    builder = make_node("hgx").gpus(1, "L4")
    _register(api, builder)
    api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=5.0))  # from memory
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).values(report_fingerprint="0" * 32))  # written by another replica
        ctx.reports.flush(session)
    assert _writes_of(pool, lambda: api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=6.0)))  # in full
    with pool.factory() as session:
        assert session.scalar(select(NodeModel.report_fingerprint)) == telemetry.fingerprint_of(_body(builder))


def test_a_node_whose_report_never_changes_is_not_written_again_after_a_flush(api, ctx, pool):
    builder = make_node("hgx").gpus(1, "L4")
    _register(api, builder)
    for load in range(3):
        api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=float(load)))
        with transaction(pool.factory) as session:
            ctx.reports.flush(session)
    assert _writes_of(pool, lambda: api.post("/api/v1/agents/hgx/heartbeat", json=_body(builder, utilization_pct=9.0))) == []


def test_a_job_started_that_the_reports_never_list_is_lost(pool, settings):
    """The agent said ``started`` but its heartbeats, answered from memory, never list the job
    (the agent lost it): the started report clears the stored fingerprint, so after a flush the
    node's heartbeats are written and one of them loses the job once its grace is over."""
    with _placing(pool, settings) as (ctx, api, builder):
        assert heartbeat(api, builder).status_code == 200
        job_id = submit(api, count=1)
        assert report(api, builder.name, job_id, "started")["accepted"]
        assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "running"
        for _ in range(4):  # the same report as before the job started, again and again
            assert heartbeat(api, builder).status_code == 200
            with transaction(pool.factory) as session:
                ctx.reports.flush(session)
            time.sleep(0.2)
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        assert job["state"] == "lost" and job["requeued_as"] is not None
