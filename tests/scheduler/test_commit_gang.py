"""Committing gangs (SQLite and PostgreSQL): every part written or none, and the pool gives a
gang that lost its race back whole."""

from __future__ import annotations

from sqlalchemy import func, select, update

from poold.db.models import AllocationModel, DeviceModel, EventModel, JobModel, NodeModel
from poold.db.session import transaction
from poold.scheduler.commit import GangProposal, commit
from poold.scheduler.engine import Placement
from poold.scheduler.loop import PassResult, Scheduler
from poold.services import jobs
from tests.builders import job, make_node, register_nodes, submit_job


def _two_hgx(pool) -> None:
    register_nodes(pool, make_node("hgx-1").gpus(8, "H100", nvlink=18), make_node("hgx-2").gpus(8, "H100", nvlink=18))


def test_a_pass_writes_every_part_of_a_gang(pool, settings):
    _two_hgx(pool)
    gang_id = submit_job(pool, count=16, same_node=False, cpu_cores=8)
    result = Scheduler(pool.factory, settings).run_pass()
    assert result.placed == [gang_id]
    with pool.factory() as session:
        gang = jobs.get_job(session, gang_id)
        assert (gang.state, gang.node_id, gang.allocations) == ("assigned", None, [])
        # 16 H100 at 4.00 = 64.00 per hour in all, 8 x 4.00 = 32.00 per part.
        assert gang.price_per_hour == 64.0
        parts = session.scalars(select(JobModel).where(JobModel.gang_of == gang_id).order_by(JobModel.gang_rank)).all()
        assert [p.gang_rank for p in parts] == [0, 1] and all(p.state == "assigned" for p in parts)
        names = {session.get(NodeModel, p.node_id).name for p in parts}
        assert names == {"hgx-1", "hgx-2"}
        for part in parts:
            held = [a for a in part.allocations if a.released_at is None]
            assert sum(a.device_id is not None for a in held) == 8  # 8 devices on its node, and one row for its CPU cores
            assert [a.cpu_cores for a in held if a.device_id is None] == [8.0] and part.price_per_hour == 32.0
        placed = session.scalars(select(EventModel.message).where(EventModel.job_id == gang_id, EventModel.kind == "job.placed")).one()
        assert "placed as a gang of 2 parts" in placed and "(rank 1)" in placed


def test_a_gang_with_one_part_no_longer_fitting_writes_nothing(pool, settings):
    _two_hgx(pool)
    gang_id = submit_job(pool, count=8, nodes=2)
    scheduler = Scheduler(pool.factory, settings)
    with pool.factory() as session:
        scheduler.refresh(session)
    request = scheduler.request_of(gang_id, job(count=8, nodes=2).model_dump(mode="json"))
    decision = scheduler.engine.place(request)
    assert isinstance(decision, Placement) and len(decision.parts) == 2
    scheduler.engine.apply(decision)
    proposal = scheduler._proposal(decision)
    assert isinstance(proposal, GangProposal)
    # Meanwhile one GPU of the second part's node turns unhealthy in the store.
    taken = proposal.parts[1].devices[3].device_id
    with transaction(pool.factory) as session:
        session.execute(update(DeviceModel).where(DeviceModel.id == taken).values(health="unhealthy"))
    with pool.factory() as session:
        before = session.scalar(select(func.count()).select_from(AllocationModel))
    written = commit(pool.factory, [proposal])
    assert (written.placed, written.lost) == ([], [gang_id])
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(AllocationModel)) == before == 0
        assert session.scalars(select(JobModel.id).where(JobModel.gang_of == gang_id)).all() == []
        assert jobs.get_job(session, gang_id).state == "pending"
    # Through the pass's own commit, the pool gives the whole gang back (both nodes).
    result = PassResult()
    scheduler._commit([(decision, proposal)], result)
    assert result.lost_races == [gang_id]
    pool_view = scheduler.engine.pool
    assert gang_id not in pool_view.holdings and pool_view.dev_free[: pool_view.n_devices].sum() == 16


def test_a_gang_beside_a_one_node_job_in_one_batch_keeps_both_within_capacity(pool, settings):
    # Three 8xH100 nodes: a 2-node gang of 8 and a 4-GPU job fit together (8 + 8 + 4 of 24).
    register_nodes(pool, *(make_node(f"hgx-{i}").gpus(8, "H100", nvlink=18) for i in range(3)))
    gang_id = submit_job(pool, count=8, nodes=2)
    single = submit_job(pool, count=4)
    result = Scheduler(pool.factory, settings).run_pass()
    assert sorted(result.placed) == sorted([gang_id, single])
    with pool.factory() as session:
        held = session.execute(
            select(AllocationModel.device_id, func.sum(AllocationModel.share))
            .where(AllocationModel.released_at.is_(None), AllocationModel.device_id.is_not(None))
            .group_by(AllocationModel.device_id)
        ).all()
        assert len(held) == 20 and all(share <= 1.0 for _, share in held)


def test_a_network_label_reported_later_moves_the_node_between_groups(pool, settings):
    from poold.services import nodes

    a, b = make_node("hgx-1").gpus(8, "H100"), make_node("hgx-2").gpus(8, "H100")
    register_nodes(pool, a, b)
    scheduler = Scheduler(pool.factory, settings)
    # hgx-2's agent now reports network ib0; hgx-1 has none: two groups of one node each.
    with transaction(pool.factory) as session:
        nodes.heartbeat(session, "hgx-2", b.network("ib0").host, b.devices)
    gang_id = submit_job(pool, count=8, nodes=2)
    result = scheduler.run_pass()
    assert result.placed == []
    with pool.factory() as session:
        assert "too_few_nodes" in jobs.get_job(session, gang_id).reason
    with transaction(pool.factory) as session:
        nodes.heartbeat(session, "hgx-1", a.network("ib0").host, a.devices)
    assert scheduler.run_pass().placed == [gang_id]


def test_a_gang_records_each_parts_scores_in_its_placed_events(pool, settings):
    _two_hgx(pool)
    gang_id = submit_job(pool, count=16, same_node=False)
    assert Scheduler(pool.factory, settings).run_pass().placed == [gang_id]
    with pool.factory() as session:
        data = session.scalars(select(EventModel.data).where(EventModel.job_id == gang_id, EventModel.kind == "job.placed")).one()
        parts = session.scalars(select(JobModel.id).where(JobModel.gang_of == gang_id).order_by(JobModel.gang_rank)).all()
        part_data = [session.scalars(select(EventModel.data).where(EventModel.job_id == p, EventModel.kind == "job.placed")).one()
                     for p in parts]
    # Rank 0 is the chosen; each part on its own node, 8 H100 at 4.00 = 32.00 per hour.
    assert [p["node"] for p in data["parts"]] == [part["chosen"]["node"] for part in part_data]
    assert {p["node"] for p in data["parts"]} == {"hgx-1", "hgx-2"} and data["chosen"] == data["parts"][0]
    assert all(p["model"] == "H100" and len(p["devices"]) == 8 and p["price_per_hour"] == 32.0 for p in data["parts"])
    assert all("total" in p["scores"] for p in data["parts"])
