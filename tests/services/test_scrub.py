"""Scrub and isolation as the daemon records them, on both stores: a job's devices turn
``scrubbing`` with its end, take no job until the agent says they are scrubbed, and one whose
scrub failed is quarantined until an administrator returns it; the isolation a job got is
kept with it."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from poold.db.models import DeviceModel, EventModel, JobModel, NodeModel
from poold.db.session import transaction
from poold.scheduler.loop import Scheduler
from poold.services import jobs, nodes
from poold_wire.messages import DeviceScrub, JobEvent
from tests.builders import job, make_node

AT = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


class Site:
    """One node, ``a``, with one L4, and the agent's reports as the test makes them."""

    def __init__(self, pool, settings):
        self.pool = pool
        self.scheduler = Scheduler(pool.factory, settings)
        self.builder = make_node("a").gpus(1, "L4")
        self.uuid = self.builder.devices[0].uuid
        with transaction(pool.factory) as session:
            self.builder.register(session)

    def submit(self) -> int:
        with transaction(self.pool.factory) as session:
            return jobs.submit(session, job()).id

    def report(self, job_id: int, kind: str, **fields) -> bool:
        with transaction(self.pool.factory) as session:
            return jobs.apply_event(session, "a", JobEvent(job_id=job_id, kind=kind, at=AT, **fields)).accepted

    def run(self, job_id: int, isolation: str = "cgroup+devices") -> None:
        assert self.scheduler.run_pass().placed == [job_id]
        assert self.report(job_id, "started", pid=42, isolation=isolation)

    def device(self) -> DeviceModel:
        with self.pool.factory() as session:
            return session.scalars(select(DeviceModel).where(DeviceModel.uuid == self.uuid)).one()

    def job(self, job_id: int) -> JobModel:
        with self.pool.factory() as session:
            return session.get(JobModel, job_id)

    def generation(self) -> int:
        with self.pool.factory() as session:
            return session.scalar(select(NodeModel.generation).where(NodeModel.name == "a"))

    def events(self, prefix: str = "device.") -> list[tuple[str, str]]:
        with self.pool.factory() as session:
            rows = session.scalars(select(EventModel).where(EventModel.kind.like(f"{prefix}%")).order_by(EventModel.id))
            return [(e.kind, e.message) for e in rows]


def test_a_device_takes_no_job_between_the_end_and_its_scrub(pool, settings):
    site = Site(pool, settings)
    first = site.submit()
    site.run(first)
    assert site.job(first).isolation == "cgroup+devices"
    assert site.report(first, "ended", outcome="succeeded", exit_code=0, scrubbing=[site.uuid])
    device = site.device()
    assert device.scrubbing_since is not None and device.scrub_job_id == first
    second = site.submit()
    assert site.scheduler.run_pass().placed == []
    assert f"being scrubbed after job {first} since" in site.job(second).reason
    generation = site.generation()
    assert site.report(first, "scrubbed", scrubbed=[DeviceScrub(uuid=site.uuid)])
    assert site.device().scrubbing_since is None and site.generation() > generation
    assert site.scheduler.run_pass().placed == [second]
    assert [kind for kind, _ in site.events()] == ["device.scrubbing", "device.scrubbed"]


def test_a_failed_scrub_quarantines_the_device_until_an_admin_returns_it(pool, settings):
    site = Site(pool, settings)
    first = site.submit()
    site.run(first)
    site.report(first, "ended", outcome="failed", exit_code=1, scrubbing=[site.uuid])
    assert site.report(first, "scrubbed", scrubbed=[DeviceScrub(uuid=site.uuid, error="nvidia-smi exited with status 1")])
    site.report(first, "scrubbed", scrubbed=[DeviceScrub(uuid=site.uuid, error="nvidia-smi exited with status 1")])  # sent twice
    device = site.device()
    assert device.scrubbing_since is None
    assert (device.quarantine_held, device.quarantine_reason) == (True, "scrub failed: nvidia-smi exited with status 1")
    second = site.submit()
    assert site.scheduler.run_pass().placed == []
    assert [kind for kind, _ in site.events()] == ["device.scrubbing", "device.quarantine_held", "device.scrub_failed"]
    # It reports healthy all along: a heartbeat does not bring it back, an administrator does.
    with transaction(pool.factory) as session:
        nodes.heartbeat(session, "a", site.builder.host, site.builder.devices, [])
    assert site.device().quarantined_at is not None
    with transaction(pool.factory) as session:
        nodes.return_device(session, site.uuid)
    assert site.scheduler.run_pass().placed == [second]


def test_a_device_held_again_by_then_is_not_marked(pool, settings):
    """A forced cancel releases the devices at once; by the time the agent reports the kill,
    another job holds the device, and the agent scrubs nothing a running job uses."""
    site = Site(pool, settings)
    first = site.submit()
    site.run(first)
    with transaction(pool.factory) as session:
        jobs.cancel(session, first, force=True)
    second = site.submit()
    assert site.scheduler.run_pass().placed == [second]
    assert site.report(first, "ended", outcome="cancelled", exit_code=137, scrubbing=[site.uuid])
    assert site.device().scrubbing_since is None
    assert [kind for kind, _ in site.events("job.")].count("job.stopped") == 1


def test_a_scrub_its_agent_forgot_is_ended_by_an_administrator(pool, settings):
    site = Site(pool, settings)
    first = site.submit()
    site.run(first)
    site.report(first, "ended", outcome="succeeded", exit_code=0, scrubbing=[site.uuid])
    with transaction(pool.factory) as session:
        nodes.return_device(session, site.uuid)
    assert site.device().scrubbing_since is None
    assert site.events()[-1] == ("device.scrub_abandoned",
                                 f"L4 {site.uuid}: the scrub after job {first} is no longer awaited (returned by an administrator)")
    assert site.scheduler.run_pass().placed == []  # nothing pending: the device is simply free
    assert site.device().in_service


def test_the_started_event_says_the_isolation(pool, settings):
    site = Site(pool, settings)
    first = site.submit()
    assert site.scheduler.run_pass().placed == [first]
    site.report(first, "started", pid=7, isolation="cgroup", message="no device control: the device files of X are not known")
    assert site.job(first).isolation == "cgroup"
    assert site.events("job.started") == [
        ("job.started", "started on a (pid 7); isolation cgroup (no device control: the device files of X are not known)")]


def test_an_assignment_carries_the_jobs_cpu_and_memory_booking(pool, settings):
    site = Site(pool, settings)
    with transaction(pool.factory) as session:
        job_id = jobs.submit(session, job(cpu_cores=2.5, host_memory="3GiB")).id
    site.scheduler.run_pass()
    with pool.factory() as session:
        [assignment] = jobs.assignments(session, "a").start
    assert (assignment.job_id, assignment.cpu_cores, assignment.host_memory_mib) == (job_id, 2.5, 3072)
