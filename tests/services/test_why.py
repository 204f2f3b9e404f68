"""``poold.services.why`` on both stores, where the API tests cannot reach: a replica that has
run no pass, and a pool whose layout changed since the pass that made a reservation (its
device slots may name other devices now): both say so rather than show a reservation."""

from __future__ import annotations

from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.scheduler.plan import Capacity
from poold.services import jobs, why
from tests.builders import job, make_node, register_nodes, submit_job


def test_a_replica_without_a_pass_says_it_has_no_reservation_to_show(pool, settings):
    register_nodes(pool, make_node("n1").gpus(1, "L4"))
    waiting = submit_job(pool, count=2)
    answer = why.why(pool.factory, Scheduler(pool.factory, settings), Capacity(pool.factory, settings), waiting)
    assert answer.pending.reservation is None
    assert "no scheduling pass" in answer.pending.reservation_note
    assert answer.pending.plan.never_fits is not None  # 2 GPUs asked of a pool of one


def test_a_reservation_made_on_an_older_layout_is_not_shown(pool, settings):
    register_nodes(pool, make_node("n1").gpus(1, "L4"))
    scheduler, capacity = Scheduler(pool.factory, settings), Capacity(pool.factory, settings)
    with transaction(pool.factory) as session:
        spec = job(count=1)
        running = jobs.submit(session, spec.model_copy(update={"max_runtime": 3600})).id
    assert scheduler.run_pass().placed == [running]
    waiting = submit_job(pool, count=1)
    scheduler.run_pass()
    shown = why.why(pool.factory, scheduler, capacity, waiting).pending
    assert shown.reservation is not None and shown.reservation.nodes == ["n1"]

    register_nodes(pool, make_node("n2").gpus(1, "T4"))  # a node joins: the next refresh lays the pool out anew
    answer = why.why(pool.factory, scheduler, capacity, waiting).pending
    with pool.factory() as session:
        scheduler.refresh(session)
    assert why.why(pool.factory, scheduler, capacity, waiting).pending.reservation is None
    assert "changed since the last scheduling pass" in why.why(pool.factory, scheduler, capacity, waiting).pending.reservation_note
    assert answer.reservation is not None  # asked before any refresh saw the new node: still the pass's
