"""A gang's life in the store (SQLite and PostgreSQL): its parts' assignments carry the gang,
the gang runs once every part runs, one part's failure or loss stops the others and ends the
gang with that cause, and a lost gang is submitted again whole."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from poold.db.models import AllocationModel, JobModel, NodeModel
from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.services import gangs, jobs, recovery
from poold_wire.messages import JobEvent
from tests.builders import job, make_node

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def placed_gang(pool, settings, **resources) -> tuple[int, list[tuple[int, str]]]:
    """Two 8xH100 nodes and a 16-GPU gang placed over them: its id and its parts (id, node) by rank."""
    with transaction(pool.factory) as session:
        make_node("hgx-1").gpus(8, "H100", nvlink=18).register(session)
        make_node("hgx-2").gpus(8, "H100", nvlink=18).register(session)
        gang_id = jobs.submit(session, job(count=16, same_node=False, **resources)).id
    assert Scheduler(pool.factory, settings).run_pass().placed == [gang_id]
    with pool.factory() as session:
        parts = session.execute(
            select(JobModel.id, NodeModel.name).join(NodeModel, NodeModel.id == JobModel.node_id)
            .where(JobModel.gang_of == gang_id).order_by(JobModel.gang_rank)
        ).all()
    return gang_id, [(part_id, node) for part_id, node in parts]


def report(pool, node: str, job_id: int, kind: str, **fields) -> None:
    with transaction(pool.factory) as session:
        jobs.apply_event(session, node, JobEvent(job_id=job_id, kind=kind, at=NOW, **fields))


def state(pool, job_id: int) -> tuple[str, str | None, bool]:
    with pool.factory() as session:
        found = session.get(JobModel, job_id)
        return found.state, found.reason, found.cancel_requested


def test_each_part_is_assigned_with_the_gang(pool, settings):
    gang_id, parts = placed_gang(pool, settings)
    with pool.factory() as session:
        hostnames = [session.scalar(select(NodeModel.hostname).where(NodeModel.name == node)) for _, node in parts]
        for rank, (part_id, node) in enumerate(parts):
            [start] = jobs.assignments(session, node).start
            assert start.job_id == part_id and len(start.devices) == 8
            # Every part sees the same gang: nodes in rank order, 8 devices each, one port.
            assert start.gang.model_dump() == {"job_id": gang_id, "rank": rank, "nodes": hostnames, "devices_per_node": [8, 8],
                                               "master_port": 29500 + gang_id % 1000}


def test_the_gang_runs_once_every_part_runs_and_succeeds_once_every_part_succeeds(pool, settings):
    gang_id, [(first, node_1), (second, node_2)] = placed_gang(pool, settings)
    report(pool, node_1, first, "started")
    assert state(pool, gang_id)[0] == "assigned"  # one part of two
    report(pool, node_2, second, "started")
    assert state(pool, gang_id)[0] == "running"
    report(pool, node_1, first, "ended", exit_code=0)
    assert state(pool, gang_id)[0] == "running"
    report(pool, node_2, second, "ended", exit_code=0)
    assert state(pool, gang_id)[:2] == ("succeeded", "every part succeeded (2 nodes)")


@pytest.mark.parametrize(("outcome", "exit_code"), [("failed", 3), ("timed_out", None), ("cancelled", None)])
def test_one_part_ending_badly_stops_the_other_and_ends_the_gang_with_that_cause(pool, settings, outcome, exit_code):
    gang_id, [(first, node_1), (second, node_2)] = placed_gang(pool, settings)
    report(pool, node_1, first, "started")
    report(pool, node_2, second, "started")
    report(pool, node_2, second, "ended", exit_code=exit_code, outcome=outcome)
    code = f" (exit {exit_code})" if exit_code is not None else ""
    assert state(pool, gang_id) == (outcome, f"part job {second} (rank 1) on node {node_2} {outcome}{code}", False)
    assert state(pool, first)[2] is True  # its agent is told to stop it
    with pool.factory() as session:
        assert jobs.assignments(session, node_1).cancel == [first]
    report(pool, node_1, first, "ended", outcome="cancelled")
    assert state(pool, first)[0] == "cancelled" and state(pool, gang_id)[0] == outcome  # the gang keeps its cause
    with pool.factory() as session:
        assert session.scalars(select(AllocationModel.id).where(AllocationModel.released_at.is_(None))).all() == []


def test_a_lost_node_loses_the_gang_stops_the_other_part_and_submits_the_gang_again_once(pool, settings):
    gang_id, [(first, node_1), (second, node_2)] = placed_gang(pool, settings)  # retries = 1 by default
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).where(NodeModel.name == node_2).values(last_heartbeat_at=NOW - timedelta(seconds=60)))
        session.execute(update(NodeModel).where(NodeModel.name == node_1).values(last_heartbeat_at=NOW))
    with transaction(pool.factory) as session:
        found = recovery.mark_silent_nodes_lost(session, 30.0, now=NOW)
    assert found.jobs == [second] and len(found.retries) == 1
    retry = found.retries[0]
    gang_state, reason, _ = state(pool, gang_id)
    assert gang_state == "lost" and reason.startswith(f"part job {second} (rank 1) on node {node_2} was lost: node {node_2} was lost")
    assert f"submitted again as job {retry} (attempt 2 of 2)" in reason
    assert state(pool, second)[0] == "lost" and state(pool, first)[2] is True
    with pool.factory() as session:
        again = session.get(JobModel, retry)
        assert (again.state, again.retry_of, again.gang_of, again.attempt) == ("pending", gang_id, None, 2)
    # The retry, placed again and lost again, is not submitted a third time.
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).values(state="ready", last_heartbeat_at=NOW))
        session.execute(update(AllocationModel).values(released_at=NOW))  # the stopped part's agent reported meanwhile
    Scheduler(pool.factory, settings).run_pass()
    with pool.factory() as session:
        parts = session.scalars(select(JobModel).where(JobModel.gang_of == retry)).all()
        assert len(parts) == 2 and all(p.attempt == 2 for p in parts)
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).where(NodeModel.id == parts[0].node_id).values(last_heartbeat_at=NOW - timedelta(seconds=60)))
    with transaction(pool.factory) as session:
        found = recovery.mark_silent_nodes_lost(session, 30.0, now=NOW)
    assert found.retries == [] and state(pool, retry)[0] == "lost"
    assert "not submitted again: attempt 2 of 2" in state(pool, retry)[1]


def test_cancel_stops_every_part_and_force_ends_them_at_once(pool, settings):
    gang_id, [(first, node_1), (second, node_2)] = placed_gang(pool, settings)
    with transaction(pool.factory) as session:
        jobs.cancel(session, gang_id)
    assert state(pool, first)[2] and state(pool, second)[2]
    report(pool, node_1, first, "ended", outcome="cancelled")
    assert state(pool, gang_id)[:2] == ("cancelled", "cancelled: its parts were stopped")
    report(pool, node_2, second, "ended", outcome="cancelled")

    with transaction(pool.factory) as session:
        other = jobs.submit(session, job(count=8, nodes=2)).id
    Scheduler(pool.factory, settings).run_pass()
    with transaction(pool.factory) as session:
        jobs.cancel(session, other, force=True)
    with pool.factory() as session:
        parts = session.scalars(select(JobModel).where(JobModel.gang_of == other)).all()
        assert len(parts) == 2 and {p.state for p in parts} == {"cancelled"}
        assert session.get(JobModel, other).state == "cancelled"
        assert session.scalars(select(AllocationModel.id).where(AllocationModel.released_at.is_(None))).all() == []


def test_members_are_the_gang_and_its_parts(pool, settings):
    gang_id, parts = placed_gang(pool, settings)
    with pool.factory() as session:
        expected = sorted([gang_id, *(part_id for part_id, _ in parts)])
        assert gangs.members(session, gang_id) == expected == gangs.members(session, parts[1][0])
