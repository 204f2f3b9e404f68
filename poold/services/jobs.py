"""Jobs: submit, list, cancel, what each agent must start or kill, and the agents' reports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from poold.api.schemas import TERMINAL_STATES
from poold.db.models import MAX_JOB_ID, AllocationModel, JobModel, NodeModel, QueueModel, utcnow
from poold.jobspec import JobSpec
from poold.scheduler.framework import Rejections
from poold.scheduler.plan import blamed_field
from poold.services import Conflict, Invalid, NotFound, events
from poold.services.nodes import get_node, touch
from poold_wire.messages import AssignedDevice, Assignment, AssignmentsResponse, JobEvent, JobEventResult

ACTIVE_STATES = ("assigned", "running")


def submit(session: Session, spec: JobSpec, never_fits: Rejections | None = None, never_fits_policy: str = "refuse") -> JobModel:
    """Store a pending job. ``never_fits`` says why no device of the pool could hold it even
    when idle (``poold.scheduler.plan.Capacity``): with policy ``refuse`` the job is refused
    naming the key at fault, with ``warn`` it is kept and its reason says so."""
    if session.get(QueueModel, spec.queue) is None:
        known = ", ".join(session.scalars(select(QueueModel.name).order_by(QueueModel.name)))
        raise Invalid(f"no queue named {spec.queue!r} (known: {known})", field="spec.queue")
    reason = "waiting for the scheduler"
    if never_fits is not None:
        why = f"no device of the pool could hold this job even when idle: {never_fits.summary()}"
        if never_fits_policy == "refuse":
            raise Invalid(why, field="spec." + blamed_field(never_fits))
        reason = "never fits as the pool stands: " + never_fits.summary()
    job = JobModel(
        name=spec.name,
        queue_name=spec.queue,
        priority=spec.priority,
        state="pending",
        spec=spec.model_dump(mode="json"),
        reason=reason,
    )
    session.add(job)
    session.flush()
    events.record(session, "job.submitted", f"job {job.id} ({job.name}) submitted to queue {job.queue_name}", job_id=job.id)
    if never_fits is not None:
        events.record(session, "job.never_fits", reason, job_id=job.id)
    return job


def get_job(session: Session, job_id: int, *, lock: bool = False) -> JobModel:
    if not 0 < job_id <= MAX_JOB_ID:  # PostgreSQL would refuse to compare it with the column
        raise NotFound(f"no job {job_id}")
    query = select(JobModel).where(JobModel.id == job_id).options(selectinload(JobModel.allocations))
    if lock:
        query = query.with_for_update()
    job = session.scalars(query).one_or_none()
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def list_jobs(session: Session, states: list[str] | None = None, limit: int = 200) -> list[JobModel]:
    query = select(JobModel).options(selectinload(JobModel.allocations)).order_by(JobModel.id.desc()).limit(limit)
    if states:
        query = query.where(JobModel.state.in_(states))
    return list(session.scalars(query))


def cancel(session: Session, job_id: int) -> JobModel:
    """Pending jobs end at once; placed ones are killed by their agent, which reports the end."""
    job = get_job(session, job_id, lock=True)
    if job.state in TERMINAL_STATES:
        raise Conflict(f"job {job_id} already ended ({job.state})")
    if job.state == "pending":
        _end(session, job, "cancelled", None, "cancelled before it was placed")
    elif not job.cancel_requested:
        job.cancel_requested = True
        events.record(session, "job.cancel_requested", f"cancel requested; the agent will stop job {job_id}", job_id=job.id)
    return job


def assignments(session: Session, node_name: str) -> AssignmentsResponse:
    """What the node's agent must start (placed, not yet started) and kill (cancel requested)."""
    node = get_node(session, node_name)
    jobs = session.scalars(
        select(JobModel)
        .where(JobModel.node_id == node.id, JobModel.state.in_(ACTIVE_STATES))
        .options(selectinload(JobModel.allocations).selectinload(AllocationModel.device))
        .order_by(JobModel.id)
    ).all()
    response = AssignmentsResponse()
    for job in jobs:
        if job.cancel_requested:
            response.cancel.append(job.id)
        elif job.state == "assigned":
            response.start.append(_assignment(job))
    return response


def _assignment(job: JobModel) -> Assignment:
    spec = job.spec
    devices = [
        AssignedDevice(
            uuid=alloc.device.uuid,
            kind=alloc.device.kind,
            vendor=alloc.device.vendor,
            model=alloc.device.model,
            index=alloc.device.index,
            bus_id=alloc.device.bus_id,
            parent_uuid=alloc.device.parent.uuid if alloc.device.parent is not None else None,
            share=alloc.share,
            memory_mib=alloc.memory_mib,
        )
        for alloc in job.allocations
        if alloc.released_at is None and alloc.device is not None
    ]
    return Assignment(
        job_id=job.id,
        name=job.name,
        command=spec["command"],
        env=spec.get("env", {}),
        workdir=spec.get("workdir"),
        user=spec.get("user"),
        max_runtime_s=spec.get("max_runtime"),
        devices=devices,
    )


def apply_event(session: Session, node_name: str, event: JobEvent) -> JobEventResult:
    """Record an agent's report. Idempotent; a second, different outcome for a job is refused."""
    node = get_node(session, node_name)
    job = None
    if event.job_id <= MAX_JOB_ID:
        job = session.scalars(select(JobModel).where(JobModel.id == event.job_id).with_for_update()).one_or_none()

    def result(accepted: bool, reason: str | None = None) -> JobEventResult:
        return JobEventResult(job_id=event.job_id, kind=event.kind, accepted=accepted, reason=reason)

    if job is None:
        return result(False, f"no job {event.job_id}")
    if job.node_id != node.id:
        return result(False, f"job {job.id} is not placed on node {node_name}")
    if event.kind == "started":
        if job.state == "assigned":
            job.state, job.started_at = "running", event.at
            pid = f" (pid {event.pid})" if event.pid else ""
            events.record(session, "job.started", f"started on {node_name}{pid}", job_id=job.id, node_id=node.id)
        return result(True)
    outcome = event.outcome or ("succeeded" if event.exit_code == 0 else "failed")
    if job.state in TERMINAL_STATES:
        if job.state == outcome and job.exit_code == event.exit_code:
            return result(True)
        events.record(
            session,
            "job.conflicting_outcome",
            f"agent reported {outcome} (exit {event.exit_code}) after {job.state}; kept {job.state}",
            job_id=job.id,
            node_id=node.id,
        )
        return result(False, f"job {job.id} already ended as {job.state}")
    if job.started_at is None and outcome != "cancelled":
        job.started_at = event.at
    _end(session, job, outcome, event.exit_code, event.message, at=event.at)
    return result(True)


def _end(
    session: Session, job: JobModel, outcome: str, exit_code: int | None, message: str | None, at: datetime | None = None
) -> None:
    job.state = outcome
    job.exit_code = exit_code
    job.ended_at = at or utcnow()
    job.cancel_requested = False
    released = False
    for alloc in job.allocations:
        if alloc.released_at is None:
            alloc.released_at = job.ended_at
            released = True
    if released and job.node_id is not None:
        touch(session, [job.node_id])
    code = f" (exit {exit_code})" if exit_code is not None else ""
    detail = f": {message}" if message else ""
    events.record(session, f"job.{outcome}", f"{outcome}{code}{detail}", job_id=job.id, node_id=job.node_id)


def node_name_of(session: Session, job: JobModel) -> str | None:
    if job.node_id is None:
        return None
    return session.scalar(select(NodeModel.name).where(NodeModel.id == job.node_id))
