"""The scheduler's snapshot follows the store by node generation: what changes placement moves
the generation and is reloaded; a heartbeat that changes nothing placement reads costs nothing."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import event

from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.scheduler.snapshot import StoreSnapshot
from poold.services import jobs, nodes
from poold_wire.messages import JobEvent
from tests.builders import job, make_node


def _refresh(pool, snapshot) -> int:
    with pool.factory() as session:
        return snapshot.refresh(session)


def test_a_heartbeat_that_changes_nothing_placement_reads_reloads_nothing(pool, settings):
    builders = [make_node(f"n{i}").gpus(2, "A100", nvlink=12) for i in range(3)]
    with transaction(pool.factory) as session:
        for builder in builders:
            builder.register(session)
    snapshot = StoreSnapshot(settings)
    assert _refresh(pool, snapshot) == 3
    layout = snapshot.pool.layout
    first = builders[0]
    for device in first.devices:  # usage moves all the time; placement does not read it
        device.utilization_pct, device.temperature_c, device.power_w = 97.0, 71.0, 388.5
        device.attributes["processes"] = [{"pid": 4242, "used_memory_mib": 100}]
    with transaction(pool.factory) as session:
        nodes.heartbeat(session, "n0", first.host, first.devices)
    assert _refresh(pool, snapshot) == 0
    assert snapshot.pool.layout == layout
    # memory used outside poold moves it only by 256 MiB steps; health always
    first.devices[0].memory_outside_mib = 100
    with transaction(pool.factory) as session:
        nodes.heartbeat(session, "n0", first.host, first.devices)
    assert _refresh(pool, snapshot) == 0
    first.devices[0].memory_outside_mib = 4096
    first.devices[1].health, first.devices[1].health_reason = "unhealthy", "XID 79"
    with transaction(pool.factory) as session:
        nodes.heartbeat(session, "n0", first.host, first.devices)
    assert _refresh(pool, snapshot) == 1
    slot = snapshot.pool.node_by_id[1]
    devices = list(snapshot.pool.devices_of(slot))
    assert snapshot.pool.dev_mem_outside[devices].tolist() == [4096, 0]
    assert snapshot.pool.dev_healthy[devices].tolist() == [True, False]
    assert snapshot.pool.layout == layout  # the same devices: slots kept, caches over them too


def test_placements_drains_and_job_ends_are_reloaded(pool, settings):
    with transaction(pool.factory) as session:
        make_node("a", cpu_cores=32).gpus(2, "L4").register(session)
    snapshot = StoreSnapshot(settings)
    _refresh(pool, snapshot)
    with transaction(pool.factory) as session:
        job_id = jobs.submit(session, job(share=0.5, cpu_cores=6, host_memory="8GiB")).id
    assert Scheduler(pool.factory, settings).run_pass().placed == [job_id]
    assert _refresh(pool, snapshot) == 1
    p = snapshot.pool
    assert sorted(p.dev_free[: p.n_devices].tolist()) == [0.5, 1.0]
    assert (p.node_cpu_held[0], p.node_mem_held[0]) == (6.0, 8192)
    with transaction(pool.factory) as session:
        jobs.apply_event(session, "a", JobEvent(job_id=job_id, kind="ended", at=datetime.now(timezone.utc), exit_code=0))
    assert _refresh(pool, snapshot) == 1
    assert p.dev_free[: p.n_devices].tolist() == [1.0, 1.0] and p.node_cpu_held[0] == 0.0
    with transaction(pool.factory) as session:
        nodes.set_drained(session, "a", True, "firmware")
    assert _refresh(pool, snapshot) == 1 and bool(p.node_drained[0])


def test_the_pool_at_its_best_reloads_no_node_for_what_it_holds(pool, settings):
    """The capacity view (never-fits) follows the layout generation: placements and releases
    move a node's generation, not its layout."""
    with transaction(pool.factory) as session:
        make_node("a").gpus(2, "A100", nvlink=12).register(session)
        job_id = jobs.submit(session, job(count=1)).id
    best = StoreSnapshot(settings, capacity_only=True)
    assert _refresh(pool, best) == 1
    assert Scheduler(pool.factory, settings).run_pass().placed == [job_id]
    assert _refresh(pool, best) == 0
    with transaction(pool.factory) as session:  # a device goes away: what the node is changed
        builder = make_node("a").gpus(1, "A100")
        nodes.heartbeat(session, "a", builder.host, builder.devices)
    assert _refresh(pool, best) == 1


def test_a_pass_does_not_reload_the_nodes_it_placed_on(pool, settings):
    with transaction(pool.factory) as session:
        make_node("a").gpus(2, "A100", nvlink=12).register(session)
        first, second = (jobs.submit(session, job(count=1)).id for _ in range(2))
    scheduler = Scheduler(pool.factory, settings)
    assert scheduler.run_pass().placed == [first, second]
    assert _refresh(pool, scheduler.snapshot) == 0  # its own commit: the pool holds it already
    with transaction(pool.factory) as session:  # a change by someone else is reloaded
        nodes.set_drained(session, "a", True)
    assert _refresh(pool, scheduler.snapshot) == 1


def test_a_reloaded_node_knows_what_each_job_holds_there(pool, settings):
    """The sharing planner reads ``pool.holdings`` to tell what a running job would give back
    (victims, reservations): a node loaded from the store carries each placed job's holding,
    and releasing it gives back exactly what the job held."""
    with transaction(pool.factory) as session:
        make_node("a", cpu_cores=32).gpus(2, "L4").register(session)
    with transaction(pool.factory) as session:
        half = jobs.submit(session, job(share=0.5, cpu_cores=6, host_memory="8GiB")).id
        whole = jobs.submit(session, job(count=1, cpu_cores=2)).id
    Scheduler(pool.factory, settings).run_pass()
    snapshot = StoreSnapshot(settings)  # a daemon starting: everything comes from the store
    _refresh(pool, snapshot)
    p = snapshot.pool
    slot = p.node_by_id[1]
    [held_half], [held_whole] = p.holdings[half], p.holdings[whole]
    assert (held_half.node, held_half.share, held_half.cpu_cores, held_half.host_memory_mib) == (slot, 0.5, 6.0, 8192)
    assert (len(held_whole.devices), held_whole.share, held_whole.cpu_cores) == (1, 1.0, 2.0)
    # 32 cores, 8 held; L4s: one whole held, the other half held (or both on one: share adds up)
    assert p.node_cpu_held[slot] == 8.0
    p.release(half)
    p.release(whole)
    assert p.node_cpu_held[slot] == 0.0 and p.node_mem_held[slot] == 0
    assert p.dev_free[list(p.devices_of(slot))].tolist() == [1.0, 1.0]
    assert p.holdings == {}


def test_when_the_digest_of_generations_is_unchanged_a_refresh_reads_no_node(pool, settings):
    """A refresh reads one row (how many nodes, their generations' sum, the highest id) and
    stops there while the store holds the generations the snapshot holds, also after the
    pass's own commits; a change elsewhere, or a new node, is read and reloaded."""
    with transaction(pool.factory) as session:
        make_node("a").gpus(2, "A100", nvlink=12).register(session)
        make_node("b").gpus(2, "A100", nvlink=12).register(session)
        jobs.submit(session, job(count=1))
    scheduler = Scheduler(pool.factory, settings)
    assert len(scheduler.run_pass().placed) == 1
    statements: list[str] = []
    listen = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    event.listen(pool.engine, "before_cursor_execute", listen)
    try:
        assert _refresh(pool, scheduler.snapshot) == 0
        assert [s for s in statements if "FROM nodes" in s] == [
            "SELECT count(*), coalesce(sum(generation), 0), coalesce(max(id), 0) FROM nodes"]
        with transaction(pool.factory) as session:
            nodes.set_drained(session, "b", True)
        statements.clear()
        assert _refresh(pool, scheduler.snapshot) == 1
        assert "SELECT id, generation FROM nodes" in statements
    finally:
        event.remove(pool.engine, "before_cursor_execute", listen)
    with transaction(pool.factory) as session:
        make_node("c").gpus(1, "L4").register(session)
    assert _refresh(pool, scheduler.snapshot) == 1
    assert sorted(scheduler.snapshot.pool.node_name[:3]) == ["a", "b", "c"]
