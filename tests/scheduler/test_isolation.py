"""One bad stored record never stops a pass: the culprit is set aside with an event, and the
rest of the pool is placed. The records are written past the API (rows from an older
daemon, a hand edit), which is how they reach a pass now that the API checks reports."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from poold.db.models import DeviceModel, EventModel, JobModel, NodeModel
from poold.db.session import transaction
from poold.scheduler import snapshot
from poold.scheduler.loop import Scheduler
from poold.services import jobs
from tests.builders import job, make_node


def _setup(pool):
    with transaction(pool.factory) as session:
        make_node("good").gpus(2, "L4").register(session)
        make_node("bad").gpus(2, "H100", nvlink=18).register(session)
        return [jobs.submit(session, job(count=1)).id for _ in range(2)]


def _events(pool, kind):
    with pool.factory() as session:
        return session.scalars(select(EventModel).where(EventModel.kind == kind)).all()


@pytest.mark.parametrize(
    "attributes",
    [{"mig_slices": "three"}, {"nvlink": ["a", "b"]}, {"mig_profile": 7}, {"pcie": {"switch": {"deep": [1, 2]}}}],
)
def test_devices_with_attributes_of_the_wrong_type_are_read_as_absent(pool, settings, attributes):
    job_ids = _setup(pool)
    with transaction(pool.factory) as session:
        session.execute(update(DeviceModel).values(attributes=attributes, compute_capability="nine"))
        session.execute(update(NodeModel).values(generation=NodeModel.generation + 1))
    result = Scheduler(pool.factory, settings).run_pass()
    assert sorted(result.placed) == job_ids


def test_a_node_that_cannot_be_read_is_set_aside_and_the_rest_placed(pool, settings, monkeypatch):
    job_ids = _setup(pool)
    real = snapshot.device_spec

    def breaks_on_h100(source, **kwargs):
        if source.model == "H100":
            raise ValueError("unreadable device row")
        return real(source, **kwargs)

    monkeypatch.setattr(snapshot, "device_spec", breaks_on_h100)
    scheduler = Scheduler(pool.factory, settings)
    result = scheduler.run_pass()
    assert sorted(result.placed) == job_ids
    with pool.factory() as session:
        placed_on = set(session.scalars(select(NodeModel.name).join(JobModel, JobModel.node_id == NodeModel.id)))
    assert placed_on == {"good"}
    [event] = _events(pool, "node.set_aside")
    assert "unreadable device row" in event.message
    scheduler.run_pass()
    assert len(_events(pool, "node.set_aside")) == 1  # once per change of the node, not every pass


def test_a_job_whose_stored_file_cannot_be_read_fails_alone(pool, settings):
    job_ids = _setup(pool)
    with transaction(pool.factory) as session:
        broken = jobs.submit(session, job(count=1)).id
        session.execute(update(JobModel).where(JobModel.id == broken).values(spec={"resources": {"count": "x"}}))
    result = Scheduler(pool.factory, settings).run_pass()
    assert sorted(result.placed) == job_ids
    with pool.factory() as session:
        failed = jobs.get_job(session, broken)
        assert failed.state == "failed" and "cannot be read" in failed.reason
    [event] = _events(pool, "job.set_aside")
    assert event.job_id == broken


def test_a_job_the_engine_fails_on_waits_alone(pool, settings, monkeypatch):
    job_ids = _setup(pool)
    scheduler = Scheduler(pool.factory, settings)
    real = scheduler.engine.place

    def fails_on_first(request):
        if request.job_id == job_ids[0]:
            raise RuntimeError("engine bug")
        return real(request)

    monkeypatch.setattr(scheduler.engine, "place", fails_on_first)
    result = scheduler.run_pass()
    assert result.placed == job_ids[1:]
    with pool.factory() as session:
        waiting = jobs.get_job(session, job_ids[0])
        assert waiting.state == "pending" and "engine bug" in waiting.reason
    assert [e.job_id for e in _events(pool, "job.set_aside")] == [job_ids[0]]
