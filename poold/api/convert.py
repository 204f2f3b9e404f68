"""ORM rows and engine decisions to API schemas."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from poold.api.schemas import (
    AllocationOut, DeviceOut, EventOut, JobDetail, JobOut, NodeOut, PartOut, PlanChoice, PlanOut, PlanRejection, QuarantineOut,
    QueueOut, QueueUsageOut, ScrubbingOut, TokenOut, WhyFallback, WhyOut, WhyPending, WhyPlace, WhyPlacement, WhyPreemption,
    WhyReservation,
)
from poold.db.models import DeviceModel, EventModel, JobModel, NodeModel, QueueModel, TokenModel, as_utc, utcnow
from poold.scheduler.engine import Choice, Placement
from poold.scheduler.plan import Plan
from poold.scheduler.snapshot import device_price, network_of
from poold.services.nodes import NodeCounts
from poold.services.queue_usage import QueueUsage
from poold.services.why import PlacementWhy, Why
from poold.services.tokens import state_of
from poold.settings import Settings
from poold.telemetry import Usage


def job_out(
    job: JobModel, node_names: dict[int, str], *, with_spec: bool = False, show_env: bool = False, requeued_as: dict[int, int] | None = None
) -> JobOut:
    """``with_spec``: with the job file, its environment only if ``show_env`` (the owner's and admins' view)."""
    allocations = [
        AllocationOut(
            device_uuid=alloc.device.uuid,
            device_model=alloc.device.model,
            kind=alloc.device.kind,
            node=node_names.get(alloc.device.node_id, "?"),
            share=alloc.share,
            memory_mib=alloc.memory_mib,
            price_per_hour=alloc.price_per_hour,
        )
        for alloc in job.allocations
        if alloc.device is not None  # the row holding the job's CPU cores and host memory has none
    ]
    return JobOut(
        id=job.id,
        name=job.name,
        queue=job.queue_name,
        priority=job.priority,
        state=job.state,  # type: ignore[arg-type]
        node=node_names.get(job.node_id) if job.node_id is not None else None,
        submitted_at=job.submitted_at,
        placed_at=job.placed_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        exit_code=job.exit_code,
        isolation=job.isolation,  # type: ignore[arg-type]
        price_per_hour=job.price_per_hour,
        reason=job.reason,
        attempt=job.attempt,
        retry_of=job.retry_of,
        requeued_as=(requeued_as or {}).get(job.id),
        allocations=allocations,
        preemptions=job.preemptions,
        preempted_by=job.preempted_by,
        preempt_reason=job.preempt_reason,
        stopping=job.state in ("assigned", "running") and job.preempt_requested_at is not None,
        owner=job.owner,
        spec=(job.spec if show_env else {key: value for key, value in job.spec.items() if key != "env"}) if with_spec else None,
        hidden=["spec.env"] if with_spec and not show_env and job.spec.get("env") else [],
        gang_of=job.gang_of,
        gang_rank=job.gang_rank,
    )


def job_detail(
    job: JobModel, node_names: dict[int, str], events: list[EventModel], requeued_as: dict[int, int], *, show_env: bool,
    parts: list[JobModel] = (),
) -> JobDetail:
    base = job_out(job, node_names, with_spec=True, show_env=show_env, requeued_as=requeued_as)
    return JobDetail(
        **base.model_dump(),
        parts=[
            PartOut(id=part.id, rank=part.gang_rank, node=node_names.get(part.node_id) if part.node_id is not None else None,
                    state=part.state, exit_code=part.exit_code, devices=sum(1 for a in part.allocations if a.device_id is not None))
            for part in parts
        ],
        events=[event_out(event, node_names) for event in events],
    )


def event_out(event: EventModel, node_names: dict[int, str]) -> EventOut:
    return EventOut(id=event.id, at=event.at, kind=event.kind, message=event.message, job_id=event.job_id,
                    node=node_names.get(event.node_id) if event.node_id else None, data=event.data or {})


def node_names(session: Session, node_ids: Iterable[int | None]) -> dict[int, str]:
    """The names of the nodes ``node_ids`` names (None skipped): only those rows are read, so
    listing one job of a pool of thousands of nodes does not read every node's name."""
    wanted = sorted({node_id for node_id in node_ids if node_id is not None})
    names: dict[int, str] = {}
    for start in range(0, len(wanted), 1000):  # small enough for one IN (...) on every store
        query = select(NodeModel.id, NodeModel.name).where(NodeModel.id.in_(wanted[start : start + 1000]))
        names.update(session.execute(query).all())
    return names


def job_node_ids(jobs: Iterable[JobModel]) -> Iterator[int | None]:
    """The nodes a job's summary names: its own and its devices'."""
    for job in jobs:
        yield job.node_id
        for alloc in job.allocations:
            if alloc.device is not None:
                yield alloc.device.node_id


def node_out(node: NodeModel, counts: NodeCounts) -> NodeOut:
    return NodeOut(
        name=node.name,
        hostname=node.hostname,
        state=node.state,
        drained=node.drained,
        drain_reason=node.drain_reason,
        cpu_cores=node.cpu_cores,
        memory_total_mib=node.memory_total_mib,
        devices=counts.devices,
        devices_free=counts.devices_free,
        slices=counts.slices,
        slices_free=counts.slices_free,
        last_heartbeat_at=node.last_heartbeat_at,
        agent_version=node.agent_version,
        machine_id=node.machine_id,
        network=network_of(node),
    )


def device_out(
    device: DeviceModel, names: dict[int, str], held: dict[int, float], settings: Settings, parents: dict[int, str], usage: Usage | None
) -> DeviceOut:
    """``usage``: the node's last figures as this daemon heard them (None: not since it started)."""
    figures = usage.devices.get(device.uuid, {}) if usage is not None else {}
    return DeviceOut(
        uuid=device.uuid,
        node=names.get(device.node_id, "?"),
        vendor=device.vendor,
        kind=device.kind,
        model=device.model,
        name=device.name,
        index=device.index,
        parent_uuid=parents.get(device.parent_id) if device.parent_id else None,
        memory_total_mib=device.memory_total_mib,
        memory_free_mib=figures.get("memory_free_mib"),
        health=device.health,
        health_reason=device.health_reason,
        quarantine=QuarantineOut(since=device.quarantined_at, reason=device.quarantine_reason, until=device.quarantine_until,
                                 held=device.quarantine_held) if device.quarantined_at is not None else None,
        scrubbing=ScrubbingOut(since=device.scrubbing_since, job_id=device.scrub_job_id)
        if device.scrubbing_since is not None else None,
        allocated_share=round(held.get(device.id, 0.0), 6),
        price_per_hour=device_price(settings, device.model, device.attributes),
        attributes=device.attributes,
        utilization_pct=figures.get("utilization_pct"),
        temperature_c=figures.get("temperature_c"),
        power_w=figures.get("power_w"),
    )


def plan_choice(placement: Placement, choice: Choice) -> PlanChoice:
    return PlanChoice(**placement.summary(choice))


def plan_out(plan: Plan) -> PlanOut:
    rejections = [
        PlanRejection(stage=plan.filter_of.get(code, "candidates"), code=code, count=count, example=plan.rejections.examples.get(code, ""))
        for code, count in plan.rejections.ranked()
    ]
    placement = plan.placement
    return PlanOut(
        placeable=placement is not None,
        reason=plan.reason,
        chosen=plan_choice(placement, placement.chosen) if placement else None,
        runner_up=plan_choice(placement, placement.runner_up) if placement and placement.runner_up else None,
        parts=[plan_choice(placement, part) for part in placement.parts] if placement else [],
        rejections=rejections,
        never_fits=plan.never_fits.rejections.summary() if plan.never_fits else None,
    )


def token_out(row: TokenModel) -> TokenOut:
    return TokenOut(
        id=row.id, role=row.role, state=state_of(row), user=row.user_name, node=row.node, machine_id=row.machine_id,  # type: ignore[arg-type]
        uses_left=row.uses_left, note=row.note, created_by=row.created_by, created_at=row.created_at, expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def queue_out(row: QueueModel, settings: Settings) -> QueueOut:
    return QueueOut(name=row.name, priority=row.priority, description=row.description, weight=row.weight,
                    guarantee=row.guarantees or {}, limit=row.limits or {}, in_config=row.name in settings.queues,
                    changed_by=row.changed_by, changed_at=row.changed_at)


def queue_usage_out(usage: QueueUsage, settings: Settings) -> QueueUsageOut:
    oldest = usage.oldest_pending_at
    return QueueUsageOut(
        **queue_out(usage.queue, settings).model_dump(), devices=usage.devices, cost_per_hour=round(usage.cost_per_hour, 6),
        placed=usage.placed, stopping=usage.stopping, pending=usage.pending, oldest_pending_at=oldest,
        oldest_wait_s=None if oldest is None else max(0.0, (utcnow() - as_utc(oldest)).total_seconds()),
    )


def why_out(why: Why, settings: Settings) -> WhyOut:
    job = why.job
    pending = None
    if (p := why.pending) is not None:
        pending = WhyPending(
            place=WhyPlace(**vars(p.place)), queue=queue_usage_out(p.usage, settings), under_guarantee=p.under_guarantee,
            now=plan_out(p.plan), reservation=WhyReservation(**vars(p.reservation)) if p.reservation else None,
            reservation_note=p.reservation_note, fallbacks=[WhyFallback(**vars(f)) for f in p.fallbacks],
        )
    return WhyOut(
        job_id=job.id, name=job.name, state=job.state, queue=job.queue_name, priority=job.priority,  # type: ignore[arg-type]
        submitted_at=job.submitted_at, reason=job.reason, pending=pending,
        placement=why_placement(why.placement) if why.placement else None,
        preemption=WhyPreemption(**vars(why.preemption)) if why.preemption else None,
    )


def why_placement(placement: PlacementWhy) -> WhyPlacement:
    data = placement.breakdown or {}
    return WhyPlacement(
        placed_at=placement.placed_at, node=placement.node, note=placement.note,
        chosen=PlanChoice(**data["chosen"]) if "chosen" in data else None,
        runners_up=[PlanChoice(**choice) for choice in data.get("runners_up", [])],
        parts=[PlanChoice(**choice) for choice in data.get("parts", [])],
    )
