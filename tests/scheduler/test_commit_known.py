"""A batch's re-check under lock takes what a node holds from the pass's own account when the
node's store generation is still the one the pass read it at, and from the allocation rows
otherwise (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import event

from poold.scheduler.commit import commit
from poold.scheduler.engine import Placement
from poold.scheduler.loop import Scheduler
from tests.builders import job, make_node, register_nodes, submit_job


def _proposed(pool, settings, **resources):
    """A fresh scheduler's placement of a new job, held in its pool, and its proposal."""
    job_id = submit_job(pool, **resources)
    scheduler = Scheduler(pool.factory, settings)
    with pool.factory() as session:
        scheduler.refresh(session)
    decision = scheduler.engine.place(scheduler.request_of(job_id, job(**resources).model_dump(mode="json")))
    assert isinstance(decision, Placement)
    scheduler.engine.apply(decision)
    return scheduler, job_id, scheduler._proposal(decision)


def _sums_read(pool, call) -> tuple[object, list[str]]:
    statements: list[str] = []
    listen = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(pool.engine, "before_cursor_execute", listen)
    try:
        return call(), [s for s in statements if "sum(allocations" in s]
    finally:
        event.remove(pool.engine, "before_cursor_execute", listen)


def test_a_node_at_the_generation_the_pass_read_is_checked_against_the_pass_account(pool, settings):
    register_nodes(pool, make_node("l4", cpu_cores=16).gpus(2, "L4"))
    submit_job(pool, share=0.5, cpu_cores=4)
    Scheduler(pool.factory, settings).run_pass()  # half of one L4 and 4 cores held in the store
    scheduler, job_id, proposal = _proposed(pool, settings, share=0.5, cpu_cores=4)
    known = scheduler._held_before([proposal])
    [held] = known.values()
    # The pool holds both jobs; less this batch, it is what the store holds: 4 cores, and on
    # the device the new job takes, half of it if it shares the first one, none otherwise.
    assert held.cpu_cores == 4.0
    [(share, _)] = held.devices.values()
    assert share in (0.0, 0.5)
    written, sums = _sums_read(pool, lambda: commit(pool.factory, [proposal], known=known))
    assert written.placed == [job_id] and sums == []  # nothing summed from the allocation rows
    # What the account says is what decides: told the node's cores are all held, the batch loses.
    _, other_id, other = _proposed(pool, settings, share=0.5, cpu_cores=4)
    # (at the generation the commit above moved the node to)
    full = {node_id: replace(held, generation=held.generation + 1, cpu_cores=16.0) for node_id, held in known.items()}
    assert commit(pool.factory, [other], known=full).lost == [other_id]


def test_a_node_that_changed_since_the_pass_read_it_is_summed_from_the_store(pool, settings):
    """A stale pass offers one L4 while another daemon places an older job on both: the stale
    account says the L4 is free, but the node's generation moved, so the store's rows decide
    and the offer loses."""
    register_nodes(pool, make_node("l4").gpus(2, "L4"))
    other = submit_job(pool, count=2)
    stale, job_id, proposal = _proposed(pool, settings, count=1)
    known = stale._held_before([proposal])
    assert Scheduler(pool.factory, settings).run_pass().placed == [other]
    written, sums = _sums_read(pool, lambda: commit(pool.factory, [proposal], known=known))
    assert written.lost == [job_id] and sums
