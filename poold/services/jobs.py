"""Jobs: submit, list, cancel, lose, what each agent must start or kill, and the agents' reports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, selectinload

from poold.api.schemas import TERMINAL_STATES
from poold.db.models import MAX_JOB_ID, AllocationModel, DeviceModel, EventModel, JobModel, NodeModel, QueueModel, utcnow
from poold.jobspec import DEFAULT_RETRIES, JobSpec
from poold.scheduler.framework import Rejections
from poold.scheduler.blame import blamed_field
from poold.services import Conflict, Invalid, NotFound, ServiceError, events, scrub
from poold.services.nodes import check_machine, get_node, touch
from poold_wire.messages import AssignedDevice, Assignment, AssignmentsResponse, GangInfo, JobEvent, JobEventResult, StopOrder

ACTIVE_STATES = ("assigned", "running")
# Ends the daemon decides without the agent (by force, or the node lost): the agent's later
# report that it killed the job confirms it rather than contradicting it.
GIVEN_UP_STATES = ("cancelled", "lost")


def submit(
    session: Session, spec: JobSpec, never_fits: Rejections | None = None, never_fits_policy: str = "refuse", owner: str | None = None
) -> JobModel:
    """Store a pending job of ``owner`` (the poold user who submits it). ``never_fits`` says why
    no device of the pool could hold it even when idle (``poold.scheduler.plan.Capacity``): with
    policy ``refuse`` the job is refused naming the key at fault, with ``warn`` it is kept and
    its reason says so."""
    [stored] = submit_many(session, [(spec, never_fits, owner)], never_fits_policy)
    if isinstance(stored, ServiceError):
        raise stored
    return stored


NEVER_FITS = "never fits as the pool stands: "


def submit_many(
    session: Session, specs: list[tuple[JobSpec, Rejections | None, str | None]], never_fits_policy: str = "refuse"
) -> list[JobModel | ServiceError]:
    """Store pending jobs (as :func:`submit`) in one go: one insert for the jobs and one for their
    events. Each job is stored, or answered with why it was refused; one refusal does not stop
    the others. The jobs returned are not in the session (their ids and fields are set)."""
    queues = set(session.scalars(select(QueueModel.name)))
    results: list[JobModel | ServiceError] = []
    for spec, never_fits, owner in specs:
        try:
            results.append(_pending_job(spec, never_fits, never_fits_policy, queues, owner))
        except ServiceError as refusal:
            results.append(refusal)
    stored = [job for job in results if isinstance(job, JobModel)]
    if not stored:
        return results
    # Core inserts (not the ORM's bulk path, which works each row through the mapper), one
    # statement each for the jobs and their events: a burst of submits is one round trip, not
    # one unit of work per job.
    columns = ("name", "queue_name", "priority", "state", "spec", "reason", "cancel_requested", "attempt", "owner", "submitted_at",
               "preemptions")
    table = JobModel.__table__
    ids = session.execute(
        table.insert().returning(table.c.id, sort_by_parameter_order=True),
        [{column: getattr(job, column) for column in columns} for job in stored],
    ).scalars().all()
    notes = []
    for job, job_id in zip(stored, ids):
        job.id = job_id
        notes.append({"at": job.submitted_at, "kind": "job.submitted", "job_id": job_id, "node_id": None, "data": {},
                      "message": f"job {job_id} ({job.name}) submitted to queue {job.queue_name}"})
        if job.reason.startswith(NEVER_FITS):
            notes.append({"at": job.submitted_at, "kind": "job.never_fits", "job_id": job_id, "node_id": None, "data": {}, "message": job.reason})
    session.execute(EventModel.__table__.insert(), notes)
    return results


def _pending_job(spec: JobSpec, never_fits: Rejections | None, policy: str, queues: set[str], owner: str | None) -> JobModel:
    if spec.queue not in queues:
        raise Invalid(f"no queue named {spec.queue!r} (known: {', '.join(sorted(queues))})", field="spec.queue")
    reason = "waiting for the scheduler"
    if never_fits is not None:
        why = f"no device of the pool could hold this job even when idle: {never_fits.summary()}"
        field = blamed_field(never_fits)
        if field == "resources.count" and not spec.resources.multi_node and spec.resources.count > 1:
            why += (f"; to spread its {spec.resources.count} devices over several nodes, ask nodes = N with count devices "
                    "on each, or same_node = false")
        if policy == "refuse":
            raise Invalid(why, field="spec." + field)
        reason = NEVER_FITS + never_fits.summary()
    job = JobModel(name=spec.name, queue_name=spec.queue, priority=spec.priority, state="pending", spec=spec.model_dump(mode="json"),
                   reason=reason, cancel_requested=False, attempt=1, owner=owner, submitted_at=utcnow(), preemptions=0)
    job.allocations = []  # known empty: nothing is loaded to show it
    return job


def lose(session: Session, job: JobModel, why: str) -> JobModel | None:
    """End ``job`` (locked, placed) ``lost`` because ``why``, releasing what it holds, and submit
    it again as a new job while its job file's ``retries`` allow; returns the new job, if any.

    A retry is a new job (new id, ``retry_of`` the lost one, the next ``attempt``), not the
    same job back to pending: an agent that comes back still running the lost copy is told to
    kill it by its id, which can never be confused with the retry's. A part of a gang is not
    submitted again itself: its gang is lost with it, and submitted again whole
    (``poold.services.gangs.lose_part``).
    """
    if job.gang_of is not None:
        return gangs.lose_part(session, job, why)
    retries = int(job.spec.get("retries", DEFAULT_RETRIES))
    retry = None
    if job.cancel_requested:
        fate = "a cancel was requested, so it is not submitted again"
    elif job.attempt > retries:
        fate = f"not submitted again: attempt {job.attempt} of {retries + 1} (retries = {retries})"
    else:
        retry = JobModel(name=job.name, queue_name=job.queue_name, priority=job.priority, state="pending", spec=job.spec,
                         reason="waiting for the scheduler", attempt=job.attempt + 1, retry_of=job.id, owner=job.owner)
        session.add(retry)
        session.flush()
        fate = f"submitted again as job {retry.id} (attempt {retry.attempt} of {retries + 1})"
        events.record(session, "job.submitted",
                      f"job {retry.id} ({retry.name}) submitted to queue {retry.queue_name} again: job {job.id} was lost "
                      f"(attempt {retry.attempt} of {retries + 1})", job_id=retry.id)
    job.reason = f"{why}; {fate}"
    _end(session, job, "lost", None, job.reason)
    return retry


def lock_placed(session: Session, *where: ColumnElement[bool]) -> list[JobModel]:
    """The placed jobs (``assigned`` or ``running``) matching ``where``, locked in id order,
    with their allocations (for :func:`lose`). Parts of gangs are locked with their whole gang
    (the gang and its other parts, in id order), which is not returned unless it matches."""
    found = session.execute(select(JobModel.id, JobModel.gang_of).where(JobModel.state.in_(ACTIVE_STATES), *where)).all()
    if any(gang is not None for _, gang in found):
        gangs.lock_members(session, [job_id for job_id, _ in found])
        matched = [job_id for job_id, _ in found]
        return list(session.scalars(
            select(JobModel).where(JobModel.id.in_(matched), JobModel.state.in_(ACTIVE_STATES))
            .order_by(JobModel.id).options(selectinload(JobModel.allocations)).execution_options(populate_existing=True)
        ))
    return list(session.scalars(
        select(JobModel)
        .where(JobModel.state.in_(ACTIVE_STATES), *where)
        .order_by(JobModel.id)
        .options(selectinload(JobModel.allocations))
        .with_for_update()
    ))


def unreported_on(session: Session, node_id: int) -> bool:
    """Whether a job running on the node is missing from its agent's heartbeats (and will be
    lost once its grace is over: ``poold.services.recovery.reconcile``)."""
    query = select(JobModel.id).where(JobModel.node_id == node_id, JobModel.state == "running", JobModel.unreported_since.is_not(None))
    return session.scalar(query.limit(1)) is not None


def requeued_as(session: Session, job_ids: list[int]) -> dict[int, int]:
    """Lost job id -> the id of the job submitted again for it, for those of ``job_ids`` that have one."""
    if not job_ids:
        return {}
    rows = session.execute(select(JobModel.retry_of, JobModel.id).where(JobModel.retry_of.in_(job_ids)))
    return {lost: retry for lost, retry in rows}


def get_job(session: Session, job_id: int, *, lock: bool = False) -> JobModel:
    if not 0 < job_id <= MAX_JOB_ID:  # PostgreSQL would refuse to compare it with the column
        raise NotFound(f"no job {job_id}", field="job_id")
    query = select(JobModel).where(JobModel.id == job_id).options(selectinload(JobModel.allocations))
    if lock:
        gangs.lock_gang_of(session, job_id)  # a gang's jobs together, in id order
        query = query.with_for_update()
    job = session.scalars(query).one_or_none()
    if job is None:
        raise NotFound(f"no job {job_id}", field="job_id")
    return job


def list_jobs(session: Session, states: list[str] | None = None, limit: int = 200) -> list[JobModel]:
    query = select(JobModel).options(selectinload(JobModel.allocations)).order_by(JobModel.id.desc()).limit(limit)
    if states:
        query = query.where(JobModel.state.in_(states))
    return list(session.scalars(query))


def cancel(session: Session, job_id: int, *, force: bool = False) -> JobModel:
    """Pending jobs end at once; placed ones are killed by their agent, which reports the end.

    With ``force`` (an administrator's ``poold cancel --force``) a job in any state before
    its end ends ``cancelled`` at once, without waiting for its agent: its allocations are
    released and its node's generation moves, so the scheduler sees the capacity back. If the
    agent still runs it, the agent is told to kill it (see :func:`assignments`); a job whose
    agent is gone or cannot report is ended all the same.
    """
    job = get_job(session, job_id, lock=True)
    if job.state in TERMINAL_STATES:
        raise Conflict(f"job {job_id} already ended ({job.state})")
    if force:
        where = f" on node {node_name_of(session, job)}" if job.node_id is not None else ""
        job.reason = f"cancelled by force while {job.state}{where}"
        _end(session, job, "cancelled", None, f"{job.reason}; its allocations are released")
        gangs.cancel(session, job, force=True)
    elif job.state == "pending":
        _end(session, job, "cancelled", None, "cancelled before it was placed")
    elif not job.cancel_requested:
        job.cancel_requested = True
        events.record(session, "job.cancel_requested", f"cancel requested; the agent will stop job {job_id}", job_id=job.id)
        gangs.cancel(session, job, force=False)
    return job


def assignments(session: Session, node_name: str, machine_id: str | None = None) -> AssignmentsResponse:
    """What the node's agent must start (placed, not yet started) and kill: jobs with a cancel
    requested, and jobs its last heartbeat reported running that the daemon no longer holds on
    this node (ended by force, lost, placed elsewhere, unknown). An agent on another machine
    than the node's gets nothing (409)."""
    node = get_node(session, node_name)
    check_machine(node, machine_id)
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
        elif job.preempt_requested_at is not None:  # in `cancel` too, for agents that predate `stop`
            response.cancel.append(job.id)
            response.stop.append(StopOrder(job_id=job.id, grace_s=job.preempt_grace_s or 0.0, reason=job.preempt_reason or ""))
        elif job.state == "assigned":
            response.start.append(_assignment(session, job))
    held = {job.id for job in jobs}
    response.cancel = sorted({*response.cancel, *(job_id for job_id in node.running_jobs or [] if job_id not in held)})
    return response


def _assignment(session: Session, job: JobModel) -> Assignment:
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
    resources = spec.get("resources") or {}
    gang = GangInfo(**gangs.gang_of_assignment(session, job)) if job.gang_of is not None else None
    return Assignment(
        job_id=job.id,
        name=job.name,
        command=spec["command"],
        env=spec.get("env", {}),
        workdir=spec.get("workdir"),
        user=spec.get("user"),
        max_runtime_s=spec.get("max_runtime"),
        devices=devices,
        cpu_cores=float(resources.get("cpu_cores") or 0),
        host_memory_mib=int(resources.get("host_memory") or 0),
        run=job.preemptions + 1,
        gang=gang,
    )


def apply_event(session: Session, node_name: str, event: JobEvent) -> JobEventResult:
    """Record an agent's report. Idempotent; a second, different outcome for a job is refused.

    ``started`` records the isolation the job got; an ``ended`` job's ``scrubbing`` devices
    stay out of placement until its ``scrubbed`` event (``poold.services.scrub``)."""
    node = get_node(session, node_name)
    job = None
    if event.job_id <= MAX_JOB_ID:
        gangs.lock_gang_of(session, event.job_id)  # a part locks its gang first, in id order
        job = session.scalars(select(JobModel).where(JobModel.id == event.job_id).with_for_update()).one_or_none()

    def result(accepted: bool, reason: str | None = None) -> JobEventResult:
        return JobEventResult(job_id=event.job_id, kind=event.kind, accepted=accepted, reason=reason)

    if job is None:
        return result(False, f"no job {event.job_id}")
    if job.node_id != node.id and not (event.kind == "scrubbed" and _scrubbing_for(session, node, job)):
        return result(False, f"job {job.id} is not placed on node {node_name}")
    if event.kind != "scrubbed" and event.run is not None and event.run <= job.preemptions:
        return result(True)  # about a run cut short by preemption, whose end was taken already
    if event.kind == "started":
        if job.state in ("assigned", "running") and event.isolation is not None:
            job.isolation = event.isolation  # also for a job a heartbeat adopted before this came
        if job.state == "assigned":
            job.state, job.started_at = "running", event.at
            if job.id not in (node.running_jobs or []):
                # Only a written report can lose it if the agent never lists it: every daemon
                # writes this node's next heartbeat in full (``poold.telemetry``).
                node.report_fingerprint = None
            pid = f" (pid {event.pid})" if event.pid else ""
            isolation = f"; isolation {event.isolation}" if event.isolation else ""
            note = f" ({event.message})" if event.message else ""
            events.record(session, "job.started", f"started on {node_name}{pid}{isolation}{note}", job_id=job.id, node_id=node.id)
            if job.gang_of is not None:
                gangs.part_started(session, job)
        return result(True)
    if event.kind == "scrubbed":
        scrub.finish(session, node, job, event.scrubbed)
        return result(True)
    outcome = event.outcome or ("succeeded" if event.exit_code == 0 else "failed")
    if job.state in TERMINAL_STATES:
        if job.state == outcome and job.exit_code == event.exit_code:
            return result(True)
        if outcome == "cancelled" and job.state in GIVEN_UP_STATES:
            # The agent killed a copy the daemon had already given up on (the kill list).
            code = f" (exit {event.exit_code})" if event.exit_code is not None else ""
            events.record(session, "job.stopped", f"the agent on {node_name} stopped the job's processes{code}",
                          job_id=job.id, node_id=node.id)
            scrub.begin(session, node, job, event.scrubbing)
            return result(True)
        events.record(
            session,
            "job.conflicting_outcome",
            f"agent reported {outcome} (exit {event.exit_code}) after {job.state}; kept {job.state}",
            job_id=job.id,
            node_id=node.id,
        )
        return result(False, f"job {job.id} already ended as {job.state}")
    if job.preempt_requested_at is not None and outcome == "cancelled" and not job.cancel_requested:
        requeue_preempted(session, node, job, event)
        return result(True)
    if job.started_at is None and outcome != "cancelled":
        job.started_at = event.at
    _end(session, job, outcome, event.exit_code, event.message, at=event.at)
    scrub.begin(session, node, job, event.scrubbing)
    return result(True)


def _end(
    session: Session, job: JobModel, outcome: str, exit_code: int | None, message: str | None, at: datetime | None = None
) -> None:
    job.state = outcome
    job.exit_code = exit_code
    job.ended_at = at or utcnow()
    job.cancel_requested = False
    job.preempt_requested_at = None
    _release(session, job, job.ended_at)
    code = f" (exit {exit_code})" if exit_code is not None else ""
    detail = f": {message}" if message else ""
    events.record(session, f"job.{outcome}", f"{outcome}{code}{detail}", job_id=job.id, node_id=job.node_id)
    if job.gang_of is not None:
        gangs.part_ended(session, job)


def _release(session: Session, job: JobModel, at: datetime) -> None:
    """Release what ``job`` holds; its node's generation moves if anything was held."""
    released = False
    for alloc in job.allocations:
        if alloc.released_at is None:
            alloc.released_at = at
            released = True
    if released and job.node_id is not None:
        touch(session, [job.node_id])


def requeue_preempted(session: Session, node: NodeModel, job: JobModel, event: JobEvent) -> None:
    """The agent stopped a preempted ``job`` (locked): it is ``pending`` again, the same job,
    with what it held released and the reason saying who took its devices and why."""
    took = job.preempted_by
    _release(session, job, event.at)
    job.preemptions += 1
    events.record(session, "job.preempted",
                  f"stopped on {node.name} for job {took}: {job.preempt_reason} (grace {job.preempt_grace_s or 0:g} s"
                  f"{'; ' + event.message if event.message else ''})", job_id=job.id, node_id=node.id)
    job.reason = f"preempted for job {took}; {job.preempt_reason}; waiting for the scheduler"
    job.state, job.node_id, job.placed_at, job.started_at, job.price_per_hour = "pending", None, None, None, None
    job.exit_code = job.isolation = job.unreported_since = job.preempt_requested_at = None
    events.record(session, "job.requeued", f"pending again after {job.preemptions} preemption(s): {job.reason}", job_id=job.id)
    scrub.begin(session, node, job, event.scrubbing)


def _scrubbing_for(session: Session, node: NodeModel, job: JobModel) -> bool:
    """Whether a device of ``node`` waits for its scrub after ``job`` (which may be placed elsewhere since)."""
    query = select(DeviceModel.id).where(DeviceModel.node_id == node.id, DeviceModel.scrub_job_id == job.id)
    return session.scalar(query.limit(1)) is not None


def node_name_of(session: Session, job: JobModel) -> str | None:
    if job.node_id is None:
        return None
    return session.scalar(select(NodeModel.name).where(NodeModel.id == job.node_id))


# Gangs follow their parts through the functions above, and the functions above hand parts to
# them: imported last, once this module's names exist.
from poold.services import gangs  # noqa: E402
