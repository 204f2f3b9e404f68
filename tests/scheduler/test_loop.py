"""Scheduling passes over the store (SQLite and PostgreSQL): placements are committed whole,
reasons are stored, and concurrent passes never double-book a device."""

from __future__ import annotations

import gc
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import event, func, select

from poold.db.models import AllocationModel, EventModel, JobModel
from poold.db.session import transaction
from poold.scheduler.commit import commit
from poold.scheduler.loop import Scheduler
from poold.services import jobs, nodes
from poold_wire.messages import JobEvent
from tests.builders import job, make_node


def _submit(pool, **resources) -> int:
    with transaction(pool.factory) as session:
        return jobs.submit(session, job(**resources)).id


def _register(pool, *builders):
    with transaction(pool.factory) as session:
        for builder in builders:
            builder.register(session)


def test_pass_places_and_records_why(pool, settings):
    _register(pool, make_node("a100").gpus(4, "A100", nvlink=12), make_node("l4").gpus(2, "L4"))
    job_id = _submit(pool, count=2, accept=[{"model": "A100", "speed": 2.0}, {"model": "L4", "speed": 1.0}])
    result = Scheduler(pool.factory, settings).run_pass()
    assert result.placed == [job_id]
    with pool.factory() as session:
        placed = jobs.get_job(session, job_id)
        assert placed.state == "assigned"
        assert placed.node.name == "l4"  # L4 2 x 0.80 / 1.0 = 1.60 per unit; A100 2 x 2.20 / 2.0 = 2.20
        assert placed.price_per_hour == 1.6
        assert "cheapest per unit of work" in placed.reason
        # one row per device, and one holding the job's CPU cores and host memory on the node
        assert sorted(a.device_id is None for a in placed.allocations) == [False, False, True]
        kinds = [e.kind for e in session.scalars(select(EventModel).where(EventModel.job_id == job_id))]
        assert kinds == ["job.submitted", "job.placed"]


def test_pass_keeps_unplaceable_pending_with_reason_and_one_event(pool, settings):
    _register(pool, make_node("l4").gpus(2, "L4"))
    job_id = _submit(pool, count=4)
    Scheduler(pool.factory, settings).run_pass()
    Scheduler(pool.factory, settings).run_pass()
    with pool.factory() as session:
        waiting = jobs.get_job(session, job_id)
        assert waiting.state == "pending"
        assert "too_few_devices" in waiting.reason and "2 suitable L4 free on l4, 4 asked" in waiting.reason
        events = session.scalars(select(EventModel.kind).where(EventModel.job_id == job_id)).all()
        assert events.count("job.waiting") == 1  # same reason twice: one event


def test_later_jobs_in_a_pass_see_earlier_placements(pool, settings):
    _register(pool, make_node("l4").gpus(2, "L4"))
    ids = [_submit(pool) for _ in range(3)]
    result = Scheduler(pool.factory, settings).run_pass()
    assert result.placed == ids[:2] and result.waiting == ids[2:]
    with pool.factory() as session:
        held = session.scalars(
            select(AllocationModel.device_id).where(AllocationModel.released_at.is_(None), AllocationModel.device_id.is_not(None))
        ).all()
        assert len(held) == len(set(held)) == 2


def test_priority_order_queue_then_job_priority(pool, settings):
    _register(pool, make_node("l4").gpus(1, "L4"))
    with transaction(pool.factory) as session:
        low = jobs.submit(session, job()).id
        high = jobs.submit(session, job().model_copy(update={"priority": 5})).id
        interactive = jobs.submit(session, job().model_copy(update={"queue": "interactive"})).id
    result = Scheduler(pool.factory, settings).run_pass()
    assert result.placed == [interactive]
    assert result.waiting == [high, low]


def test_ended_job_frees_its_devices(pool, settings):
    _register(pool, make_node("l4").gpus(1, "L4"))
    first, second = _submit(pool), _submit(pool)
    Scheduler(pool.factory, settings).run_pass()
    with transaction(pool.factory) as session:
        now = datetime.now(timezone.utc)
        assert jobs.apply_event(session, "l4", JobEvent(job_id=first, kind="started", at=now)).accepted
        assert jobs.apply_event(session, "l4", JobEvent(job_id=first, kind="ended", at=now, exit_code=0)).accepted
    assert Scheduler(pool.factory, settings).run_pass().placed == [second]


def test_drained_node_takes_no_jobs(pool, settings):
    _register(pool, make_node("l4").gpus(1, "L4"))
    with transaction(pool.factory) as session:
        nodes.set_drained(session, "l4", True, "maintenance")
    job_id = _submit(pool)
    assert Scheduler(pool.factory, settings).run_pass().waiting == [job_id]
    with pool.factory() as session:
        assert "node_drained" in jobs.get_job(session, job_id).reason


def test_concurrent_passes_never_double_book(pool, settings):
    """Two daemons' passes racing over 4 GPUs and 12 jobs: each GPU is held by one job at most."""
    _register(pool, make_node("a").gpus(4, "A100"))
    for _ in range(12):
        _submit(pool)
    barrier = threading.Barrier(4)
    errors = []

    def daemon():
        try:
            scheduler = Scheduler(pool.factory, settings)
            barrier.wait()
            for _ in range(3):
                scheduler.run_pass()
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=daemon) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with pool.factory() as session:
        rows = session.execute(
            select(AllocationModel.device_id, func.sum(AllocationModel.share))
            .where(AllocationModel.released_at.is_(None), AllocationModel.device_id.is_not(None))
            .group_by(AllocationModel.device_id)
        ).all()
        assert len(rows) == 4 and all(share == 1.0 for _, share in rows)
        assert session.scalar(select(func.count()).select_from(JobModel).where(JobModel.state == "assigned")) == 4


def test_two_nodes_may_report_the_same_bus_id_based_uuid(pool, settings):
    """NPU and FPGA ids come from bus ids, unique per node only: both nodes keep their devices."""
    first, second = (make_node(n).npus(1) for n in ("npu-a", "npu-b"))
    first.devices[0].uuid = second.devices[0].uuid = "NPU-0000:c1:00.0"
    _register(pool, first, second)
    _register(pool, first, second)  # heartbeats again: nothing moves between nodes
    with pool.factory() as session:
        same = [d for d in nodes.list_devices(session) if d.uuid == "NPU-0000:c1:00.0"]
        assert sorted(d.node.name for d in same) == ["npu-a", "npu-b"]
    ids = [_submit(pool, kind="npu") for _ in range(2)]
    assert Scheduler(pool.factory, settings).run_pass().placed == ids


def test_memory_used_outside_poold_keeps_jobs_off_a_busy_gpu_unless_the_operator_ignores_it(pool, settings):
    """The HGX fixture: GPU 0 in MIG mode, GPU 1 with 64,512 MiB used by a process outside poold
    (17,047 MiB free), six idle GPUs. Seven 20 GiB GPUs do not fit there, six do."""
    from agents.inventory import collect, load_collectors

    inventory = collect(load_collectors(fake="hgx-h100-mig"))
    with transaction(pool.factory) as session:
        nodes.register(session, "hgx", inventory.host, inventory.devices, "test")
    seven = _submit(pool, count=7, memory_per_device="20GiB")
    six = _submit(pool, count=6, memory_per_device="20GiB")
    result = Scheduler(pool.factory, settings).run_pass()
    assert (result.placed, result.waiting) == ([six], [seven])
    with pool.factory() as session:
        held = {a.device.uuid for a in jobs.get_job(session, six).allocations if a.device is not None}
        assert "GPU-c1915abc-0a51-59b3-9d41-ae7a171796f2" not in held
        reason = jobs.get_job(session, seven).reason
        assert "insufficient_memory" in reason and "63.0 GiB used outside poold" in reason
    with transaction(pool.factory) as session:
        jobs.cancel(session, six)
        jobs.apply_event(session, "hgx", JobEvent(job_id=six, kind="ended", at=datetime.now(timezone.utc), exit_code=0))
    ignoring = settings.model_copy(deep=True)
    ignoring.scheduler.count_outside_memory = False
    assert Scheduler(pool.factory, ignoring).run_pass().placed == [seven]


def test_a_block_of_jobs_that_cannot_be_placed_does_not_starve_the_jobs_behind_it(pool, settings):
    """Two L4s, both held. Ahead of a CPU-only job wait 40 two-GPU jobs of higher priority,
    in 3 shapes. With 2 decisions a pass, the 40 cost 2 decisions at most (a failed shape
    fails its other jobs at once), and rotation brings the third shape and the CPU job forward."""
    _register(pool, make_node("l4").gpus(2, "L4"))
    first = _submit(pool, count=2)
    assert Scheduler(pool.factory, settings).run_pass().placed == [first]
    with transaction(pool.factory) as session:
        for i in range(40):
            jobs.submit(session, job(count=2, cpu_cores=i % 3).model_copy(update={"priority": 5}))
    cpu_job = _submit(pool, kind="cpu", cpu_cores=2)
    limited = settings.model_copy(deep=True)
    limited.scheduler.max_jobs_per_pass = 2
    scheduler = Scheduler(pool.factory, limited)
    placed = [job_id for _ in range(3) for job_id in scheduler.run_pass().placed]
    assert placed == [cpu_job]


def test_a_pass_asks_the_cheapest_victim_to_stop_and_waits_for_it(pool, settings):
    """Two L4s held by jobs of priority -5 and 0 of one queue; a job of priority 10 of that
    queue wants one. Both are lower priority, one job suffices (fewest jobs), and between the
    two the one that lost less work (ran less; here they ran about as long) is taken. The pass
    asks it to stop; the next pass chooses no more victims while it stops."""
    _register(pool, make_node("l4").gpus(2, "L4"))
    low = _submit_spec(pool, priority=-5, count=1)
    mid = _submit_spec(pool, priority=0, count=1)
    scheduler = Scheduler(pool.factory, settings)
    assert sorted(scheduler.run_pass().placed) == [low, mid]
    taker = _submit_spec(pool, priority=10, count=1)
    scheduler.run_pass()
    scheduler.run_pass()
    with pool.factory() as session:
        stopping = {j.id: j for j in session.scalars(select(JobModel).where(JobModel.preempt_requested_at.is_not(None)))}
        assert list(stopping) in ([low], [mid])
        [victim] = stopping.values()
        assert victim.preempted_by == taker and "higher priority" in victim.preempt_reason
        waiting = jobs.get_job(session, taker)
        assert waiting.state == "pending" and f"waiting for preempted job(s) {victim.id} to stop" == waiting.reason


def _submit_spec(pool, priority: int, **resources) -> int:
    with transaction(pool.factory) as session:
        return jobs.submit(session, job(**resources).model_copy(update={"priority": priority})).id


def test_a_gang_is_one_holder_holding_on_each_of_its_nodes_and_is_never_a_victim(pool, settings):
    """A gang of two parts (one L4 on each of two nodes) at priority -5 holds both L4s; a job of
    priority 10 of its queue wants one. The gang counts once (the job as submitted, with its
    parts' holdings on both nodes and their summed price) and is not preempted: stopping one
    part stops the whole gang, which preemption does not do yet."""
    _register(pool, make_node("a").gpus(1, "L4"), make_node("b").gpus(1, "L4"))
    gang = _submit_spec(pool, priority=-5, count=1, nodes=2)
    scheduler = Scheduler(pool.factory, settings)
    assert scheduler.run_pass().placed == [gang]
    with pool.factory() as session:
        holders = scheduler._holders(session)
    [holder] = holders
    assert (holder.job_id, holder.movable, holder.price_per_hour) == (gang, False, 1.6)  # 2 x L4 at 0.80
    taker = _submit_spec(pool, priority=10, count=1)
    fresh = Scheduler(pool.factory, settings)  # a daemon starting: the gang's holdings come from the store
    fresh.run_pass()
    assert {h.node for h in fresh.engine.pool.holdings[gang]} == {0, 1}
    with pool.factory() as session:
        assert session.scalar(select(func.count()).where(JobModel.preempt_requested_at.is_not(None))) == 0
        assert jobs.get_job(session, taker).state == "pending"


def test_a_pass_runs_with_the_cyclic_collector_paused_and_gives_it_back_even_when_it_fails(pool, settings, monkeypatch):
    _register(pool, make_node("l4").gpus(2, "L4"))
    _submit(pool, count=1)
    scheduler = Scheduler(pool.factory, settings)
    seen = []
    plan = scheduler.planner.plan
    monkeypatch.setattr(scheduler.planner, "plan", lambda *args, **kwargs: seen.append(gc.isenabled()) or plan(*args, **kwargs))
    assert scheduler.run_pass().placed
    assert seen == [False] and gc.isenabled()

    def fail(*args, **kwargs):
        raise RuntimeError("planner broke")

    monkeypatch.setattr(scheduler.planner, "plan", fail)
    with pytest.raises(RuntimeError, match="planner broke"):
        scheduler.run_pass()
    assert gc.isenabled()
    gc.disable()  # paused by whoever runs the pass: it stays paused
    try:
        monkeypatch.setattr(scheduler.planner, "plan", lambda *args, **kwargs: seen.append(gc.isenabled()) or plan(*args, **kwargs))
        scheduler.run_pass()
        assert seen[-1] is False and not gc.isenabled()
    finally:
        gc.enable()


def test_holders_are_read_whole_once_and_their_stop_flags_every_pass(pool, settings):
    """Two L4 jobs placed by one scheduler. A later pass reads no holder's whole row again
    (queue, priority, price never change once a job is placed), yet sees at once that one was
    asked to stop for another job, that the other is being cancelled, and when one ended."""
    _register(pool, make_node("l4").gpus(2, "L4"))
    first, second = _submit(pool, count=1), _submit(pool, count=1)
    scheduler = Scheduler(pool.factory, settings)
    assert sorted(scheduler.run_pass().placed) == [first, second]
    scheduler.run_pass()  # reads them as holders for the first time
    statements: list[str] = []
    listen = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(pool.engine, "before_cursor_execute", listen)
    try:
        with pool.factory() as session:
            holders = {h.job_id: h for h in scheduler._holders(session)}
    finally:
        event.remove(pool.engine, "before_cursor_execute", listen)
    assert sorted(holders) == [first, second] and not any(h.stopping for h in holders.values())
    assert holders[first].price_per_hour == 0.8  # the L4's price, read when the job was first seen
    assert not [s for s in statements if "price_per_hour" in s]  # the whole rows were not read again
    with transaction(pool.factory) as session:
        session.get(JobModel, first).preempt_requested_at = datetime.now(timezone.utc)
        session.get(JobModel, first).preempted_by = 99
        session.get(JobModel, second).cancel_requested = True
    with pool.factory() as session:
        holders = {h.job_id: h for h in scheduler._holders(session)}
    assert (holders[first].stopping, holders[first].preempted_for) == (True, 99)
    assert (holders[second].stopping, holders[second].preempted_for) == (True, None)
    assert holders[first].price_per_hour == 0.8
    with transaction(pool.factory) as session:
        session.get(JobModel, first).state = "preempted"
    with pool.factory() as session:
        assert [h.job_id for h in scheduler._holders(session)] == [second]
    # Preempted, put back to pending and placed again (the same job): read again, at its new price.
    with transaction(pool.factory) as session:
        again = session.get(JobModel, second)
        again.preemptions, again.price_per_hour, again.cancel_requested = 1, 0.4, False
    with pool.factory() as session:
        [holder] = scheduler._holders(session)
    assert (holder.job_id, holder.price_per_hour, holder.stopping) == (second, 0.4, False)


def test_a_holder_put_back_to_pending_between_the_two_reads_is_left_out(pool, settings, monkeypatch):
    """PostgreSQL reads each statement at its own snapshot (read committed): the job an agent's
    report put back to pending after the holders were listed is left out, not a failed pass.
    (SQLite's read transaction sees one snapshot: there both reads agree.)"""
    _register(pool, make_node("l4").gpus(2, "L4"))
    first, second = _submit(pool, count=1), _submit(pool, count=1)
    scheduler = Scheduler(pool.factory, settings)
    assert sorted(scheduler.run_pass().placed) == [first, second]
    read = scheduler._read_holders

    def requeued_meanwhile(session, job_ids):
        with transaction(pool.factory) as other:  # an agent's report, committed between the two reads
            job = other.get(JobModel, first)
            job.state, job.placed_at, job.node_id, job.preemptions = "pending", None, None, 1
        read(session, job_ids)

    monkeypatch.setattr(scheduler, "_read_holders", requeued_meanwhile)
    with pool.factory() as session:
        listed = [h.job_id for h in scheduler._holders(session)]
    assert listed == ([second] if pool.backend == "postgresql" else [first, second])


def test_placements_a_pass_could_not_commit_are_not_left_held_in_its_pool(pool, settings, monkeypatch):
    """Three jobs, one a batch; the second batch's commit fails outright. The first stays
    placed, in the store and the pool; the pool holds nothing of the other two."""
    from poold.scheduler import loop

    _register(pool, make_node("l4").gpus(4, "L4"))
    job_ids = [_submit(pool, count=1) for _ in range(3)]
    settings.scheduler.batch_size = 1
    scheduler = Scheduler(pool.factory, settings)
    calls = []

    def failing_second(factory, proposals, *args):
        calls.append(proposals[0].job_id)
        if len(calls) == 2:
            raise RuntimeError("the store went away")
        return commit(factory, proposals, *args)

    monkeypatch.setattr(loop, "commit", failing_second)
    with pytest.raises(RuntimeError, match="went away"):
        scheduler.run_pass()
    held = set(scheduler.engine.pool.holdings)
    assert held == {calls[0]} and set(job_ids) - held == set(job_ids) - {calls[0]}
    assert scheduler.engine.pool.dev_free[: scheduler.engine.pool.n_devices].sum() == 3.0
