"""A quiet event log: a waiting job gets a ``job.waiting`` event when the kind of its reason
changes, not at every pass where a count, a node or a device named inside it does."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from poold.db.models import EventModel, JobModel
from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.scheduler.reasons import reason_kind
from poold.services import jobs, nodes
from poold_wire.messages import JobEvent
from tests.builders import job, make_node


def _submit(pool, **resources) -> int:
    with transaction(pool.factory) as session:
        return jobs.submit(session, job(**resources)).id


def _end(pool, node: str, job_id: int) -> None:
    with transaction(pool.factory) as session:
        now = datetime.now(timezone.utc)
        assert jobs.apply_event(session, node, JobEvent(job_id=job_id, kind="started", at=now)).accepted
        assert jobs.apply_event(session, node, JobEvent(job_id=job_id, kind="ended", at=now, exit_code=0)).accepted


def _waiting(pool, job_id: int) -> tuple[str, list[str]]:
    with pool.factory() as session:
        reason = session.scalar(select(JobModel.reason).where(JobModel.id == job_id))
        said = session.scalars(select(EventModel.message).where(EventModel.job_id == job_id, EventModel.kind == "job.waiting")).all()
    return reason, list(said)


def test_twenty_passes_with_devices_coming_and_going_write_one_event(pool, settings):
    """Two nodes of 3 L4s; a job asks 4 (it fits on neither). Small jobs come and end on
    either node between passes, so the free counts and the node its reason names change."""
    with transaction(pool.factory) as session:
        for name in ("a", "b"):
            make_node(name).gpus(3, "L4").register(session)
    scheduler = Scheduler(pool.factory, settings)
    big = _submit(pool, count=4)
    scheduler.run_pass()
    reasons = set()
    held: list[tuple[str, int]] = []
    for step in range(20):
        if step % 3 == 2 and held:
            _end(pool, *held.pop(0))
        else:
            small = _submit(pool, count=1 + step % 2)
            if small in scheduler.run_pass().placed:
                with pool.factory() as session:
                    held.append((jobs.get_job(session, small).node.name, small))
        scheduler.run_pass()
        reasons.add(_waiting(pool, big)[0])
    reason, said = _waiting(pool, big)
    assert len(reasons) >= 5, reasons  # the reason really changed from pass to pass
    assert len({reason_kind(r) for r in reasons}) == 1, reasons
    assert said == [said[0]] and "too_few_devices" in said[0]


def test_a_new_kind_of_reason_writes_a_new_event(pool, settings):
    """Drained, then short of devices: two kinds, two events; then placed."""
    with transaction(pool.factory) as session:
        make_node("l4").gpus(2, "L4").register(session)
    scheduler = Scheduler(pool.factory, settings)
    small = _submit(pool)
    assert scheduler.run_pass().placed == [small]
    with transaction(pool.factory) as session:
        nodes.set_drained(session, "l4", True, "maintenance")
    big = _submit(pool, count=2)
    scheduler.run_pass()
    scheduler.run_pass()
    with transaction(pool.factory) as session:
        nodes.set_drained(session, "l4", False, None)
    scheduler.run_pass()
    scheduler.run_pass()
    _, said = _waiting(pool, big)
    assert len(said) == 2, said
    assert "node_drained" in said[0] and "too_few_devices" in said[1]
    _end(pool, "l4", small)
    assert scheduler.run_pass().placed == [big]


def test_reason_kind_keeps_the_nearest_miss_and_drops_examples_and_counts():
    one = ("no placement fits: too_few_devices x2 (e.g. 0 suitable L4 free on a, 4 asked); "
           "device_busy x4 (e.g. GPU-a-L4-0 is in use (1.00 held)); no reservation: jobs without max_runtime hold what it needs")
    other = "no placement fits: too_few_devices x1 (e.g. 3 suitable L4 free on b, 4 asked); no reservation: jobs without max_runtime hold what it needs"
    assert reason_kind(one) == reason_kind(other) == "no placement fits: too_few_devices x#; no reservation: jobs without max_runtime hold what it needs"
    drained = "no placement fits: node_drained x1 (e.g. node l4 is drained: maintenance); and 2 more reasons"
    assert reason_kind(drained) == "no placement fits: node_drained x#"
