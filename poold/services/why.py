"""``poold why JOB``: why a job waits, where it was placed and why there, or who preempted it.

For a pending job: its place in its queue's line (the planner's order within a queue: job
priority, then age, then id), its queue's usage against its entitlement
(``poold.services.queue_usage``), what each filter turns down now and the nearest misses (the
machinery of ``poold plan``, on the daemon's pool, for the request narrowed to the accept
entries open after the job's wait), the devices the last pass on this replica reserved for it,
when each fallback model of its accept list opens, and its stored reason.

For a job that was placed: the score breakdown its pass recorded in the ``job.placed`` event
(``Placement.breakdown``): the chosen placement beside the runners-up. For a job preempted
(now or before): by which job, why, when and how many times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from poold.db.models import EventModel, JobModel, NodeModel, as_utc, utcnow
from poold.db.session import reading
from poold.scheduler import plan as planning
from poold.scheduler.loop import Scheduler
from poold.scheduler.request import PlacementRequest
from poold.scheduler.sharing import QueueEntitlement
from poold.scheduler.sharing.entitlements import under_guarantee_keys
from poold.services import Conflict, events
from poold.services.jobs import get_job
from poold.services.queue_usage import QueueUsage, queue_usage

NO_BREAKDOWN = "no score breakdown was recorded (placed before poold recorded one)"


@dataclass
class QueuePlace:
    """Where a pending job stands among its queue's pending jobs: ``position`` 1 is next."""

    position: int
    ahead: int
    pending: int


@dataclass
class ReservedDevices:
    """Devices the last pass kept for the job from ``start_at`` on (``Reservation`` in store names)."""

    start_at: datetime
    nodes: list[str]
    devices: list[str]
    why: str


@dataclass
class Fallback:
    """An accept entry with an ``after``: the model becomes acceptable at ``opens_at``."""

    model: str
    opens_at: datetime
    open: bool


@dataclass
class PendingWhy:
    place: QueuePlace
    usage: QueueUsage
    under_guarantee: list[str]
    plan: planning.Plan
    reservation: ReservedDevices | None
    reservation_note: str | None
    fallbacks: list[Fallback]


@dataclass
class PlacementWhy:
    """What the pass recorded of a placement (``breakdown``: the ``job.placed`` event's data;
    None with ``note`` when it recorded none)."""

    placed_at: datetime
    node: str | None
    breakdown: dict[str, Any] | None
    note: str | None


@dataclass
class PreemptionWhy:
    times: int
    by_job_id: int | None
    by_queue: str | None
    reason: str | None
    stopping: bool
    requested_at: datetime | None
    last_preempted_at: datetime | None


@dataclass
class Why:
    job: JobModel
    pending: PendingWhy | None = None
    placement: PlacementWhy | None = None
    preemption: PreemptionWhy | None = None


def why(factory: sessionmaker[Session], scheduler: Scheduler, capacity: planning.Capacity, job_id: int) -> Why:
    """Explain job ``job_id`` (404 naming ``job_id`` when there is none)."""
    with reading(factory) as session:
        job = get_job(session, job_id)
        history = events.for_job(session, job_id)
        answer = Why(job)
        if job.state == "pending":
            place = queue_place(session, job)
            usage = next(u for u in queue_usage(session) if u.queue.name == job.queue_name)
        if job.preemptions or job.preempted_by is not None:
            answer.preemption = _preemption(session, job, history)
        if job.placed_at is not None:
            node = session.scalar(select(NodeModel.name).where(NodeModel.id == job.node_id)) if job.node_id else None
            answer.placement = _placement(job, node, history)
    if job.state == "pending":
        answer.pending = _pending(scheduler, capacity, job, place, usage)
    return answer


def queue_place(session: Session, job: JobModel) -> QueuePlace:
    """The job's place among its queue's pending jobs (not being cancelled), in the planner's
    order within a queue: priority descending, then submitted_at, then id."""
    mine = (JobModel.queue_name == job.queue_name, JobModel.state == "pending", JobModel.cancel_requested.is_(False))
    before = or_(
        JobModel.priority > job.priority,
        and_(JobModel.priority == job.priority, JobModel.submitted_at < job.submitted_at),
        and_(JobModel.priority == job.priority, JobModel.submitted_at == job.submitted_at, JobModel.id < job.id),
    )
    ahead = session.scalar(select(func.count()).select_from(JobModel).where(*mine, before)) or 0
    pending = session.scalar(select(func.count()).select_from(JobModel).where(*mine)) or 0
    return QueuePlace(position=ahead + 1, ahead=ahead, pending=pending)


def _pending(scheduler: Scheduler, capacity: planning.Capacity, job: JobModel, place: QueuePlace, usage: QueueUsage) -> PendingWhy:
    row = usage.queue
    entitlement = QueueEntitlement(row.name, row.priority, row.weight, dict(row.guarantees or {}), dict(row.limits or {}))
    under = sorted(under_guarantee_keys(usage.amounts(), entitlement))
    submitted = as_utc(job.submitted_at)
    now = utcnow()
    try:
        request = PlacementRequest.from_spec(job.id, job.spec)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with one stored row; the pass fails such a job
        raise Conflict(f"job {job.id}'s stored job file cannot be read for placement ({exc.__class__.__name__}: {exc})",
                       field="job_id") from exc
    reservation, note = reserved_for(scheduler, job.id)  # before the plan below refreshes the pool
    fallbacks = [
        Fallback(model, opens_at := datetime.fromtimestamp(submitted.timestamp() + after, tz=timezone.utc), opens_at <= now)
        for model, after in request.opens_at_s()
    ]
    plan = planning.plan(scheduler, capacity, request.narrowed((now - submitted).total_seconds()))
    return PendingWhy(place, usage, under, plan, reservation, note, fallbacks)


def reserved_for(scheduler: Scheduler, job_id: int) -> tuple[ReservedDevices | None, str | None]:
    """The devices the last pass on this replica reserved for ``job_id``, or None and why none."""
    with scheduler.lock:
        if not scheduler.passes:
            return None, "this replica has run no scheduling pass yet (passes run on the leader replica)"
        reservation = scheduler.last_plan.reservations.get(job_id)
        if reservation is None:
            return None, "the last scheduling pass on this replica reserved no devices for it"
        pool = scheduler.engine.pool
        if pool.layout != scheduler.last_plan_layout:
            return None, "nodes or devices changed since the last scheduling pass: its reservation is shown again after the next pass"
        nodes = list(dict.fromkeys(pool.node_name[holding.node] for holding in reservation.holdings))
        devices = [pool.dev_uuid[slot] for slot in reservation.devices]
    start = datetime.fromtimestamp(reservation.start_s, tz=timezone.utc)
    return ReservedDevices(start, nodes, devices, reservation.why), None


def _placement(job: JobModel, node: str | None, history: list[EventModel]) -> PlacementWhy:
    """The latest placement's breakdown, from its ``job.placed`` event."""
    placed = [event for event in history if event.kind == "job.placed"]
    data = placed[-1].data if placed else None
    if data and "chosen" in data:
        return PlacementWhy(as_utc(job.placed_at), node, data, None)
    return PlacementWhy(as_utc(job.placed_at), node, None, NO_BREAKDOWN)


def _preemption(session: Session, job: JobModel, history: list[EventModel]) -> PreemptionWhy:
    by_queue = None
    if job.preempted_by is not None:
        by_queue = session.scalar(select(JobModel.queue_name).where(JobModel.id == job.preempted_by))
    preempted = [event.at for event in history if event.kind == "job.preempted"]
    return PreemptionWhy(
        times=job.preemptions, by_job_id=job.preempted_by, by_queue=by_queue, reason=job.preempt_reason,
        stopping=job.preempt_requested_at is not None, requested_at=job.preempt_requested_at,
        last_preempted_at=preempted[-1] if preempted else None,
    )
