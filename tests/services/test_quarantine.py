"""Quarantine, on both stores: a device reported unhealthy takes no work until it has been
healthy for ``nodes.quarantine_s``; one that flaps stays out until an administrator returns
it; placement and its commit both see the quarantine, and the node's generation moves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from poold.db.models import DeviceModel, EventModel, JobModel, NodeModel
from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.services import Conflict, NotFound, jobs, nodes
from poold.settings import NodeSettings
from tests.builders import job, make_node

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
POLICY = NodeSettings(quarantine_s=300, quarantine_flaps=3, quarantine_flap_window_s=3600)


class Node:
    """One node with one L4 whose health the test sets, heartbeat by heartbeat."""

    def __init__(self, pool):
        self.pool = pool
        self.builder = make_node("a").gpus(1, "L4")
        self.uuid = self.builder.devices[0].uuid
        with transaction(pool.factory) as session:
            self.builder.register(session)

    def report(self, health: str, at: datetime, reason: str = "XID 79: GPU has fallen off the bus") -> None:
        device = self.builder.devices[0]
        device.health, device.health_reason = health, (reason if health != "ok" else None)
        with transaction(self.pool.factory) as session:
            nodes.heartbeat(session, "a", self.builder.host, self.builder.devices, [], POLICY, now=at)

    def device(self) -> DeviceModel:
        with self.pool.factory() as session:
            return session.scalars(select(DeviceModel).where(DeviceModel.uuid == self.uuid)).one()

    def generation(self) -> int:
        with self.pool.factory() as session:
            return session.scalar(select(NodeModel.generation).where(NodeModel.name == "a"))

    def events(self) -> list[str]:
        with self.pool.factory() as session:
            return [e.kind for e in session.scalars(select(EventModel).where(EventModel.kind.like("device.%")).order_by(EventModel.id))]


def release(pool, at: datetime) -> list[str]:
    with transaction(pool.factory) as session:
        return nodes.release_quarantines(session, at)


def test_a_device_healthy_again_stays_out_for_quarantine_s_then_returns_by_itself(pool, settings):
    node = Node(pool)
    scheduler = Scheduler(pool.factory, settings)
    node.report("unhealthy", T0)
    device = node.device()
    assert device.quarantined_at is not None and device.quarantine_until is None
    assert device.quarantine_reason == "XID 79: GPU has fallen off the bus"
    node.report("ok", T0 + timedelta(minutes=1))
    assert node.device().health == "ok" and node.device().quarantined_at is not None
    with transaction(pool.factory) as session:
        job_id = jobs.submit(session, job()).id
    # Healthy, but quarantined: placement keeps off it, and says why.
    assert scheduler.run_pass().placed == []
    with pool.factory() as session:
        reason = session.get(JobModel, job_id).reason
    assert "device_unhealthy" in reason and "quarantined until 2026-11-23 12:06:00 UTC after: XID 79" in reason
    assert release(pool, T0 + timedelta(minutes=1, seconds=299)) == []
    generation = node.generation()
    assert release(pool, T0 + timedelta(minutes=6)) == [node.uuid]
    assert node.generation() > generation  # so the scheduler's snapshot reloads the node
    assert node.device().quarantined_at is None
    assert scheduler.run_pass().placed == [job_id]
    assert node.events() == ["device.unhealthy", "device.quarantined", "device.healthy", "device.quarantine_timed", "device.returned"]


def test_failing_again_before_the_end_restarts_the_wait(pool):
    node = Node(pool)
    node.report("unhealthy", T0)
    node.report("ok", T0 + timedelta(minutes=1))
    node.report("unhealthy", T0 + timedelta(minutes=3), reason="XID 48: double-bit ECC error")
    assert release(pool, T0 + timedelta(minutes=7)) == []
    device = node.device()
    assert device.quarantine_until is None and device.quarantine_reason == "XID 48: double-bit ECC error"
    node.report("ok", T0 + timedelta(minutes=4))
    assert release(pool, T0 + timedelta(minutes=8, seconds=59)) == []
    assert release(pool, T0 + timedelta(minutes=9)) == [node.uuid]


def test_a_device_that_flaps_stays_out_until_an_administrator_returns_it(pool):
    node = Node(pool)
    for minute in (0, 10, 20):  # three times unhealthy within the hour
        node.report("unhealthy", T0 + timedelta(minutes=minute))
        node.report("ok", T0 + timedelta(minutes=minute + 1))
    device = node.device()
    assert device.quarantine_held and device.quarantine_until is None
    assert device.quarantine_reason == "flapping: unhealthy 3 times within 3600 s (last: XID 79: GPU has fallen off the bus)"
    assert release(pool, T0 + timedelta(days=1)) == []
    assert "device.quarantine_held" in node.events()
    generation = node.generation()
    with transaction(pool.factory) as session:
        returned = nodes.return_device(session, node.uuid)
        assert returned.quarantined_at is None and not returned.quarantine_held and returned.unhealthy_reports == []
    assert node.generation() > generation
    assert node.events()[-1] == "device.returned"


def test_unhealthy_reports_older_than_the_window_do_not_count(pool):
    node = Node(pool)
    for minute in (0, 30, 70):  # the first has left the hour by the third
        node.report("unhealthy", T0 + timedelta(minutes=minute))
        node.report("ok", T0 + timedelta(minutes=minute + 1))
    device = node.device()
    assert not device.quarantine_held and len(device.unhealthy_reports) == 2
    assert release(pool, T0 + timedelta(minutes=76)) == [node.uuid]


def test_returning_a_device_is_refused_while_unhealthy_or_when_not_quarantined(pool):
    node = Node(pool)
    with transaction(pool.factory) as session, pytest.raises(Conflict, match="is not quarantined"):
        nodes.return_device(session, node.uuid)
    node.report("unhealthy", T0)
    with transaction(pool.factory) as session, pytest.raises(Conflict, match=r"still reports unhealthy \(XID 79"):
        nodes.return_device(session, node.uuid)
    with transaction(pool.factory) as session, pytest.raises(NotFound, match="no device GPU-nope"):
        nodes.return_device(session, "GPU-nope")


def test_the_commit_refuses_a_device_quarantined_after_the_pass_read_the_pool(pool, settings):
    node = Node(pool)
    scheduler = Scheduler(pool.factory, settings)
    with pool.factory() as session:
        scheduler.refresh(session)
    with transaction(pool.factory) as session:
        job_id = jobs.submit(session, job()).id
        # Quarantined a moment ago by a write this daemon's pool has not seen yet (the
        # generation did not move), as a stale view of another daemon's change would be.
        session.execute(update(DeviceModel).values(quarantined_at=T0, quarantine_reason="XID 79"))
    result = scheduler.run_pass()
    assert result.placed == [] and result.lost_races == [job_id]
