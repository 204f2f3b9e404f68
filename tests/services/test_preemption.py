"""Preemption on both stores: a stop asked of the victim's agent with its grace, the victim back
to pending (same id) once the agent reports it stopped, and the edges around it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from poold.db.models import AllocationModel, DeviceModel, EventModel, JobModel, NodeModel
from poold.db.session import transaction
from poold.jobspec import JobSpec
from poold.scheduler.loop import Scheduler
from poold.services import Conflict, Invalid, jobs, preemption
from poold_wire.messages import JobEvent
from tests.builders import make_node

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def spec(**keys) -> JobSpec:
    return JobSpec.model_validate({"name": "t", "command": ["true"], "resources": {"count": 1}, **keys})


def submit(pool, **keys) -> int:
    with transaction(pool.factory) as session:
        return jobs.submit(session, spec(**keys)).id


def report(pool, job_id: int, kind: str, node: str = "a", **fields):
    with transaction(pool.factory) as session:
        return jobs.apply_event(session, node, JobEvent(job_id=job_id, kind=kind, at=NOW, **fields))


def preempt(pool, victim: int, for_job: int, reason: str = "queue prod is below its guarantee of H100 = 1", cap: float = 300.0):
    with transaction(pool.factory) as session:
        preemption.preempt(session, victim, for_job, reason, cap)


def assignments(pool, node: str = "a"):
    with pool.factory() as session:
        return jobs.assignments(session, node)


def job_row(pool, job_id: int) -> JobModel:
    with pool.factory() as session:
        return jobs.get_job(session, job_id)


def generation(pool) -> int:
    with pool.factory() as session:
        return session.scalar(select(NodeModel.generation).where(NodeModel.name == "a"))


@pytest.fixture
def running(pool, settings) -> tuple[int, int]:
    """Node a with one H100, a job running on it (grace_period 20 s), and a pending job wanting it."""
    with transaction(pool.factory) as session:
        make_node("a").gpus(1, "H100").register(session)
    victim = submit(pool, grace_period="20s")
    assert Scheduler(pool.factory, settings).run_pass().placed == [victim]
    report(pool, victim, "started", pid=10)
    waiting = submit(pool, queue="interactive")
    return victim, waiting


def test_preempt_asks_a_stop_with_the_jobs_grace_and_keeps_its_devices(pool, running):
    victim, waiting = running
    before = generation(pool)
    preempt(pool, victim, waiting)
    row = job_row(pool, victim)
    assert row.state == "running" and preemption.stopping(row)
    assert (row.preempted_by, row.preempt_grace_s) == (waiting, 20.0)
    assert row.reason.startswith(f"being preempted for job {waiting} (queue interactive); queue prod is below")
    assert generation(pool) == before + 1
    assert all(a.released_at is None for a in row.allocations)  # not free until the agent says it ended
    answer = assignments(pool)
    assert answer.cancel == [victim]  # for agents that predate `stop`
    assert [(o.job_id, o.grace_s) for o in answer.stop] == [(victim, 20.0)]
    assert answer.stop[0].reason == "queue prod is below its guarantee of H100 = 1"
    with pool.factory() as session:
        assert preemption.stopping_ids(session) == [victim]


def test_the_grace_is_cut_to_the_cap(pool, running):
    victim, waiting = running
    preempt(pool, victim, waiting, cap=5.0)
    assert assignments(pool).stop[0].grace_s == 5.0


def test_preempt_is_idempotent(pool, running):
    victim, waiting = running
    preempt(pool, victim, waiting, "first")
    other = submit(pool)
    preempt(pool, victim, other, "second")
    row = job_row(pool, victim)
    assert (row.preempted_by, row.preempt_reason) == (waiting, "first")
    with pool.factory() as session:
        kinds = session.scalars(select(EventModel.kind).where(EventModel.job_id == victim)).all()
    assert kinds.count("job.preempt_requested") == 1


def test_the_stopped_victim_goes_back_to_pending_with_its_devices_released(pool, running, settings):
    victim, waiting = running
    preempt(pool, victim, waiting)
    before = generation(pool)
    assert report(pool, victim, "ended", outcome="cancelled", exit_code=None, message="killed by SIGTERM", run=1).accepted
    row = job_row(pool, victim)
    assert (row.state, row.node_id, row.placed_at, row.started_at, row.preemptions) == ("pending", None, None, None, 1)
    assert row.preempt_requested_at is None and row.ended_at is None
    assert row.reason.startswith(f"preempted for job {waiting}; queue prod is below its guarantee")
    assert all(a.released_at is not None for a in row.allocations)
    assert generation(pool) > before
    with pool.factory() as session:
        messages = dict(session.execute(select(EventModel.kind, EventModel.message).where(EventModel.job_id == victim)).all())
    assert messages["job.preempted"].startswith(f"stopped on a for job {waiting}: queue prod is below")
    assert "job.requeued" in messages and "job.cancelled" not in messages
    # The next pass places the waiting job first (higher queue), and the victim waits for room.
    assert Scheduler(pool.factory, settings).run_pass().placed == [waiting]
    assert assignments(pool).cancel == []


def test_placed_again_it_is_the_next_run_and_a_late_report_of_the_first_run_changes_nothing(pool, running, settings):
    victim, waiting = running
    preempt(pool, victim, waiting)
    report(pool, victim, "ended", outcome="cancelled", run=1)
    with transaction(pool.factory) as session:
        jobs.cancel(session, waiting)  # the waiting job goes away: the victim has the H100 again
    assert Scheduler(pool.factory, settings).run_pass().placed == [victim]
    [start] = assignments(pool).start
    assert (start.job_id, start.run) == (victim, 2)
    assert report(pool, victim, "ended", outcome="cancelled", run=1).accepted  # the first run's end, sent again
    assert job_row(pool, victim).state == "assigned"
    report(pool, victim, "started", run=2)
    report(pool, victim, "ended", outcome="succeeded", exit_code=0, run=2)
    row = job_row(pool, victim)
    assert (row.state, row.exit_code, row.preemptions) == ("succeeded", 0, 1)


def test_a_victim_that_ended_by_itself_keeps_its_end(pool, running):
    victim, waiting = running
    preempt(pool, victim, waiting)
    report(pool, victim, "ended", outcome="succeeded", exit_code=0)
    row = job_row(pool, victim)
    assert (row.state, row.preemptions, row.preempt_requested_at) == ("succeeded", 0, None)


def test_a_users_cancel_during_the_stop_wins(pool, running):
    victim, waiting = running
    preempt(pool, victim, waiting)
    with transaction(pool.factory) as session:
        jobs.cancel(session, victim)
    answer = assignments(pool)
    assert answer.cancel == [victim] and answer.stop == []
    report(pool, victim, "ended", outcome="cancelled")
    assert job_row(pool, victim).state == "cancelled"


def test_an_assigned_victim_waits_for_its_agent_too(pool, settings):
    with transaction(pool.factory) as session:
        make_node("a").gpus(1, "H100").register(session)
    victim = submit(pool)
    Scheduler(pool.factory, settings).run_pass()
    preempt(pool, victim, submit(pool))
    answer = assignments(pool)
    assert answer.start == [] and answer.cancel == [victim] and answer.stop[0].grace_s == 30.0  # the default grace_period
    report(pool, victim, "ended", outcome="cancelled", message="it had not started on this node")
    assert job_row(pool, victim).state == "pending"


def test_only_placed_jobs_can_be_preempted(pool, running):
    victim, waiting = running
    with pytest.raises(Conflict, match="is pending"):
        preempt(pool, waiting, victim)
    with pytest.raises(Invalid):
        preempt(pool, victim, victim)


def test_a_lost_node_loses_a_stopping_victim_as_any_placed_job(pool, running):
    victim, waiting = running
    preempt(pool, victim, waiting)
    with transaction(pool.factory) as session:
        [row] = jobs.lock_placed(session, JobModel.id == victim)
        retry = jobs.lose(session, row, "node a was lost")
    row = job_row(pool, victim)
    assert row.state == "lost" and not preemption.stopping(row)
    assert retry is not None
    with pool.factory() as session:
        assert session.scalar(select(AllocationModel.id).where(AllocationModel.released_at.is_(None))) is None


def test_the_scrub_after_a_preempted_run_is_taken_from_its_node(pool, running):
    victim, waiting = running
    with pool.factory() as session:
        uuid = session.scalar(select(AllocationModel).where(AllocationModel.job_id == victim, AllocationModel.device_id.is_not(None))).device.uuid
    preempt(pool, victim, waiting)
    report(pool, victim, "ended", outcome="cancelled", scrubbing=[uuid], run=1)
    with pool.factory() as session:
        assert session.scalar(select(DeviceModel.scrubbing_since).where(DeviceModel.uuid == uuid)) is not None
    assert report(pool, victim, "scrubbed", scrubbed=[{"uuid": uuid}], run=1).accepted  # the job is pending, on no node
    with pool.factory() as session:
        assert session.scalar(select(DeviceModel.scrubbing_since).where(DeviceModel.uuid == uuid)) is None
    assert not report(pool, victim, "scrubbed", scrubbed=[{"uuid": uuid}], run=1).accepted  # nothing of it left to scrub there


def test_preemptible_and_grace_come_from_the_job_file_with_defaults_for_older_jobs(pool, running):
    victim, waiting = running
    with pool.factory() as session:  # never committed
        job = jobs.get_job(session, victim)
        assert preemption.preemptible(job) and preemption.grace_of(job, 300) == 20.0 and preemption.grace_of(job, 5) == 5
        job.spec = {key: value for key, value in job.spec.items() if key not in ("preemptible", "grace_period")}
        assert preemption.preemptible(job) and preemption.grace_of(job, 300) == 30.0  # a job stored before the keys
    assert not preemption.preemptible(job_row(pool, submit(pool, preemptible=False)))
