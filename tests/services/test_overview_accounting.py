"""The pool at a glance (``poold.services.overview``) and its accounts
(``poold.services.accounting``) on both stores, with the arithmetic in comments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from poold.db.models import AllocationModel, DeviceModel, JobModel, utcnow
from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.services import accounting, nodes
from poold.services.overview import MigCount, pool_overview
from poold.telemetry import NodeReports
from tests.builders import make_node, register_nodes, submit_job


def placed_pool(pool, settings):
    """n1: two L4s; n2: two H100s, GPU 0 split into two 3g.40gb slices. Job A holds half an
    L4, job B one 3g.40gb slice."""
    register_nodes(pool, make_node("n1").gpus(2, "L4"), make_node("n2").gpus(2, "H100").mig(0, ["3g.40gb", "3g.40gb"]))
    a = submit_job(pool, share=0.5, accept=[{"model": "L4"}])
    b = submit_job(pool, mig_profile="3g.40gb")
    scheduler = Scheduler(pool.factory, settings)
    assert sorted(scheduler.run_pass().placed) == [a, b]
    return scheduler, a, b


def test_overview_counts_whole_devices_and_slices_apart(pool, settings):
    scheduler, _, _ = placed_pool(pool, settings)
    with pool.factory() as session:
        models = {m.model: m for m in pool_overview(session, settings, fragmentation=scheduler.fragmentation_by_model())}
    l4, h100 = models["L4"], models["H100"]
    # L4: two GPUs, one half held -> 1 free, 0.5 allocated.
    assert (l4.kind, l4.devices, l4.in_service, l4.free, l4.allocated, l4.mig, l4.price_per_hour) == ("gpu", 2, 2, 1, 0.5, {}, 0.8)
    # H100: the split GPU counts once; a slice of it held, so only GPU 1 is free; the slice
    # is 3 of 7 of its GPU: allocated 3/7.
    assert (h100.devices, h100.free, h100.allocated) == (2, 1, pytest.approx(3 / 7, abs=1e-6))
    assert h100.mig == {"3g.40gb": MigCount(total=2, free=1)}
    assert (h100.memory_total_mib, l4.memory_total_mib) == (2 * 81559, 2 * 23034)  # whole GPUs only
    assert h100.memory_allocated_mib == 40448  # the slice's memory
    assert l4.fragmentation is not None and 0.0 <= l4.fragmentation <= 1.0
    assert l4.utilization_pct is None  # no agent reported figures to this daemon


def test_a_drained_node_has_nothing_free_and_a_replica_has_no_fragmentation(pool, settings):
    placed_pool(pool, settings)
    with transaction(pool.factory) as session:
        nodes.set_drained(session, "n1", True, "firmware")
    replica = Scheduler(pool.factory, settings)  # has run no pass
    with pool.factory() as session:
        models = {m.model: m for m in pool_overview(session, settings, fragmentation=replica.fragmentation_by_model())}
    assert models["L4"].free == 0 and models["L4"].in_service == 2
    assert models["L4"].fragmentation is None


def test_overview_utilisation_is_the_mean_of_fresh_agent_figures(pool, settings):
    placed_pool(pool, settings)
    with pool.factory() as session:
        uuids = list(session.scalars(select(DeviceModel.uuid).where(DeviceModel.model == "L4").order_by(DeviceModel.index)))
    reports = NodeReports()
    reports.written("n1", heartbeat_body({uuids[0]: 90.0, uuids[1]: 30.0}), "fp", False)
    with pool.factory() as session:
        [l4] = [m for m in pool_overview(session, settings, usage=reports) if m.model == "L4"]
    assert l4.utilization_pct == pytest.approx(60.0)  # (90 + 30) / 2


def test_cost_is_price_times_time_held_and_device_hours_count_slices_by_sevenths(pool, settings):
    _, a, b = placed_pool(pool, settings)
    now = utcnow()
    with transaction(pool.factory) as session:
        # A held from 3 h ago to 1 h ago (2 h); B from 30 min ago, still held.
        session.execute(update(AllocationModel).where(AllocationModel.job_id == a)
                        .values(created_at=now - timedelta(hours=3), released_at=now - timedelta(hours=1)))
        session.execute(update(JobModel).where(JobModel.id == a).values(state="succeeded"))
        session.execute(update(AllocationModel).where(AllocationModel.job_id == b).values(created_at=now - timedelta(minutes=30)))
    with pool.factory() as session:
        usage = {u.job_id: u for u in accounting.job_usage(session, now=now)}
        recent = {u.job_id: u for u in accounting.job_usage(session, since=now - timedelta(hours=2), now=now)}
        queues = accounting.cost_by_queue(session, now=now)
    # A: half an L4 at 0.8/h -> 0.4/h for 2 h = 0.8; 0.5 L4 × 2 h = 1 device-hour.
    assert usage[a].cost == pytest.approx(0.8) and usage[a].device_hours == {"L4": pytest.approx(1.0)}
    assert usage[a].held_hours == pytest.approx(2.0)  # its device row and node row cover the same 2 h once
    assert usage[a].price_per_hour == 0.0  # holds nothing now
    # B: a 3g slice of an H100 at 4.0/h -> 4 × 3/7 per hour for 0.5 h; 3/7 × 0.5 device-hours.
    assert usage[b].cost == pytest.approx(4.0 * 3 / 7 * 0.5) and usage[b].price_per_hour == pytest.approx(4.0 * 3 / 7)
    assert usage[b].device_hours == {"H100": pytest.approx(3 / 7 * 0.5)}
    # Since 2 h ago, A counts its last hour only.
    assert recent[a].cost == pytest.approx(0.4) and recent[a].held_hours == pytest.approx(1.0)
    assert queues == {"default": pytest.approx(0.8 + 4.0 * 3 / 7 * 0.5)}
    by_queue = accounting.summarise(usage.values(), "queue")
    assert [(row.key, row.jobs) for row in by_queue] == [("default", 2)]
    assert by_queue[0].cost == pytest.approx(sum(u.cost for u in usage.values()))
    by_model = {row.key: row for row in accounting.summarise(usage.values(), "model")}
    assert by_model["L4"].cost == pytest.approx(0.8) and by_model["H100"].device_hours == {"H100": pytest.approx(3 / 14)}
    with pool.factory() as session:
        assert [u.job_id for u in accounting.job_usage(session, now=now, states={"running", "assigned"})] == [b]


def test_utilisation_samples_accumulate_on_the_held_allocations(pool, settings):
    _, a, _ = placed_pool(pool, settings)
    with pool.factory() as session:
        held = session.scalar(select(DeviceModel.uuid).join(AllocationModel, AllocationModel.device_id == DeviceModel.id)
                              .where(AllocationModel.job_id == a))
    reports = NodeReports()
    for value in (10.0, 30.0):
        reports.written("n1", heartbeat_body({held: value}), "fp", False)
        with transaction(pool.factory) as session:
            assert accounting.sample_utilization(session, reports, interval_s=60) == 1
    with pool.factory() as session:
        [usage] = accounting.job_usage(session, job_ids=[a])
    assert (usage.samples, usage.utilization_pct) == (2, pytest.approx(20.0))


def test_a_job_that_held_a_device_for_no_time_counts_under_its_model():
    instant = accounting.JobUsage(job_id=1, name="x", owner=None, queue="default", state="failed", submitted_at=utcnow(),
                                  device_hours={"U250": 0.0})
    cpu = accounting.JobUsage(job_id=2, name="y", owner=None, queue="default", state="succeeded", submitted_at=utcnow(), cost=0.5)
    assert [(row.key, row.jobs) for row in accounting.summarise([instant, cpu], "model")] == [("(cpu only)", 1), ("U250", 1)]


@pytest.mark.parametrize(("text", "hours"), [("7d", 168), ("24h", 24), ("30m", 0.5), ("90s", 0.025)])
def test_since_reads_durations(text, hours):
    now = utcnow()
    assert accounting.parse_since(text, now) == now - timedelta(hours=hours)


def test_since_reads_iso_times_and_names_what_it_accepts():
    assert accounting.parse_since("2026-11-01T00:00:00").isoformat() == "2026-11-01T00:00:00+00:00"
    with pytest.raises(ValueError, match="neither a duration"):
        accounting.parse_since("last week")


def heartbeat_body(utilization: dict[str, float]) -> dict:
    return {"host": {"hostname": "n1", "load_1m": 0.1, "memory_available_mib": 1024},
            "devices": [{"uuid": uuid, "utilization_pct": value} for uuid, value in utilization.items()]}
