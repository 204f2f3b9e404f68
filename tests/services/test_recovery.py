"""Lost nodes, on both stores: a node silent past its timeout is lost; its placed jobs end lost,
release what they held, and are submitted again as new jobs while their ``retries`` allow."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update

from poold_wire.messages import JobEvent
from poold.db.models import AllocationModel, EventModel, JobModel, NodeModel
from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.services import events, jobs, nodes, recovery
from poold.settings import NodeSettings
from tests.builders import job, make_node

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def silence(pool, name: str, since: datetime) -> None:
    """As if ``name``'s agent last heartbeated at ``since``."""
    with transaction(pool.factory) as session:
        session.execute(update(NodeModel).where(NodeModel.name == name).values(last_heartbeat_at=since))


def lose_silent(pool, now: datetime = NOW) -> recovery.LostNodes:
    with transaction(pool.factory) as session:
        return recovery.mark_silent_nodes_lost(session, 30.0, now=now)


def submit(pool, spec) -> int:
    with transaction(pool.factory) as session:
        return jobs.submit(session, spec).id


def started(pool, node: str, job_id: int) -> None:
    with transaction(pool.factory) as session:
        jobs.apply_event(session, node, JobEvent(job_id=job_id, kind="started", at=NOW))


def running_on(pool, settings, builder) -> int:
    """Register ``builder``'s node and run one job on it (placed, started); its id."""
    with transaction(pool.factory) as session:
        builder.register(session)
    job_id = submit(pool, job())
    assert Scheduler(pool.factory, settings).run_pass().placed == [job_id]
    started(pool, builder.name, job_id)
    return job_id


def row(pool, model, id_: int):
    with pool.factory() as session:
        return session.get(model, id_)


def test_a_silent_node_is_lost_its_jobs_released_and_submitted_again(pool, settings):
    with transaction(pool.factory) as session:
        make_node("a").gpus(2, "L4").register(session)
    running, assigned = submit(pool, job(cpu_cores=4)), submit(pool, job(cpu_cores=4))
    scheduler = Scheduler(pool.factory, settings)
    assert sorted(scheduler.run_pass().placed) == [running, assigned]
    started(pool, "a", running)
    with transaction(pool.factory) as session:
        make_node("b").gpus(2, "L4").register(session)
    silence(pool, "a", NOW - timedelta(seconds=31))
    silence(pool, "b", NOW - timedelta(seconds=29))  # within the timeout: stays
    generation = row(pool, NodeModel, 1).generation

    found = lose_silent(pool)
    assert (found.nodes, found.jobs) == (["a"], [running, assigned])
    a = row(pool, NodeModel, 1)
    assert a.state == "lost" and a.generation > generation
    assert row(pool, NodeModel, 2).state == "ready"
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(AllocationModel).where(AllocationModel.released_at.is_(None))) == 0
        retries = {j.retry_of: j for j in session.scalars(select(JobModel).where(JobModel.retry_of.is_not(None)))}
        node_events = [e.message for e in session.scalars(select(EventModel).where(EventModel.kind == "node.lost"))]
    assert node_events == ["node a is lost: no heartbeat for 30 s"]
    assert sorted(found.retries) == sorted(r.id for r in retries.values())
    for lost_id, was in ((running, "running"), (assigned, "assigned")):
        lost, retry = row(pool, JobModel, lost_id), retries[lost_id]
        assert (lost.state, retry.state, retry.attempt, retry.spec) == ("lost", "pending", 2, lost.spec)
        assert lost.reason == f"node a was lost while the job was {was}; submitted again as job {retry.id} (attempt 2 of 2)"
        with pool.factory() as session:
            assert jobs.requeued_as(session, [lost_id]) == {lost_id: retry.id}
            [submitted] = [e.message for e in session.scalars(select(EventModel).where(EventModel.job_id == retry.id))]
        assert submitted == f"job {retry.id} (t) submitted to queue default again: job {lost_id} was lost (attempt 2 of 2)"
    # The retries go to the node that is left; lost again, they are not retried a second time.
    assert sorted(scheduler.run_pass().placed) == sorted(r.id for r in retries.values())
    silence(pool, "b", NOW - timedelta(seconds=31))
    found = lose_silent(pool)
    assert found.nodes == ["b"] and found.retries == []
    for retry in retries.values():
        assert row(pool, JobModel, retry.id).reason.endswith("; not submitted again: attempt 2 of 2 (retries = 1)")


def test_jobs_without_retries_or_with_a_cancel_requested_are_not_submitted_again(pool, settings):
    with transaction(pool.factory) as session:
        make_node("a").gpus(2, "L4").register(session)
    once = submit(pool, job().model_copy(update={"retries": 0}))
    cancelling = submit(pool, job())
    assert len(Scheduler(pool.factory, settings).run_pass().placed) == 2
    with transaction(pool.factory) as session:
        jobs.cancel(session, cancelling)
    silence(pool, "a", NOW - timedelta(hours=1))
    found = lose_silent(pool)
    assert found.jobs == [once, cancelling] and found.retries == []
    assert row(pool, JobModel, once).reason.endswith("not submitted again: attempt 1 of 1 (retries = 0)")
    assert row(pool, JobModel, cancelling).reason.endswith("a cancel was requested, so it is not submitted again")


def test_a_lost_node_comes_back_with_its_next_heartbeat_and_kills_what_was_given_up(pool, settings):
    builder = make_node("a").gpus(1, "L4")
    job_id = running_on(pool, settings, builder)
    silence(pool, "a", NOW - timedelta(hours=1))
    lose_silent(pool)
    with transaction(pool.factory) as session:
        # The agent was cut off, not dead: the job still runs there.
        node = nodes.heartbeat(session, "a", builder.host, builder.devices, running_jobs=[job_id])
        assert node.state == "ready"
    with transaction(pool.factory) as session:
        assert jobs.assignments(session, "a").cancel == [job_id]
        last = session.scalars(select(EventModel).where(EventModel.kind == "node.ready")).all()
        assert [e.message for e in last] == ["node a is back"]
        stopped = jobs.apply_event(session, "a", JobEvent(job_id=job_id, kind="ended", at=NOW, outcome="cancelled", exit_code=143))
    assert stopped.accepted and row(pool, JobModel, job_id).state == "lost"


def test_a_heartbeat_reconciles_the_jobs_held_on_the_node_with_those_the_agent_runs(pool, settings):
    builder = make_node("a").gpus(4, "L4")
    with transaction(pool.factory) as session:
        builder.register(session)
    ids = [submit(pool, job()) for _ in range(4)]
    assert sorted(Scheduler(pool.factory, settings).run_pass().placed) == ids
    adopted, waiting, vanished, kept = ids  # all assigned on a
    for job_id in (vanished, kept):
        started(pool, "a", job_id)
    with transaction(pool.factory) as session:
        gone = jobs.submit(session, job())
        gone.state = "lost"  # a job the daemon gave up on, that the agent still runs

    def beat(at: datetime) -> None:
        # The agent runs: adopted (its started report never landed), kept, the lost one, and one nobody knows.
        with transaction(pool.factory) as session:
            recovery.heartbeat(session, "a", builder.host, builder.devices, [adopted, kept, gone.id, 999], "machine-a", NodeSettings(timeout_s=30), now=at)

    beat(NOW)
    assert row(pool, JobModel, adopted).state == "running"
    assert row(pool, JobModel, waiting).state == "assigned"  # not started yet: the agent will
    assert row(pool, JobModel, kept).state == "running"
    assert row(pool, JobModel, vanished).state == "running" and row(pool, JobModel, vanished).unreported_since is not None
    with transaction(pool.factory) as session:
        assert jobs.assignments(session, "a").cancel == [gone.id, 999]
        assert [e.message for e in events.for_job(session, adopted)][-1] == "adopted: the agent on a reports it running"
    # Missing for less than the grace (its ended report may be on its way), then lost and retried.
    beat(NOW + timedelta(seconds=29))
    assert row(pool, JobModel, vanished).state == "running"
    beat(NOW + timedelta(seconds=30))
    lost = row(pool, JobModel, vanished)
    assert lost.state == "lost"
    assert lost.reason.startswith("the agent on a no longer runs it (not in its heartbeats for 30 s); submitted again as job ")
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(AllocationModel)
                              .where(AllocationModel.job_id == vanished, AllocationModel.released_at.is_(None))) == 0
    assert row(pool, JobModel, kept).state == "running"


def test_a_job_listed_again_before_the_grace_ends_is_not_lost(pool, settings):
    builder = make_node("a").gpus(1, "L4")
    job_id = running_on(pool, settings, builder)
    for seconds, running in ((0, []), (20, [job_id]), (40, []), (60, [])):
        with transaction(pool.factory) as session:
            recovery.heartbeat(session, "a", builder.host, builder.devices, running, None, NodeSettings(timeout_s=30),
                               now=NOW + timedelta(seconds=seconds))
    # missing since 40 s, not since 0 s: 20 s of the 30 s grace have passed
    assert row(pool, JobModel, job_id).state == "running"
