"""A scheduling pass: read the pool into a view, place pending jobs in order, commit each
placement in its own transaction with the device rows locked, so two daemons (or a pass
and a drain) can never double-book a device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from agents.record import DeviceRecord
from poold.db.models import AllocationModel, DeviceModel, JobModel, NodeModel, QueueModel, utcnow
from poold.db.session import transaction
from poold.jobspec import JobSpec
from poold.scheduler.engine import Placement, Unplaceable, place
from poold.scheduler.framework import PlacementRequest
from poold.scheduler.stack import Stack, build_stack
from poold.scheduler.view import EPSILON, DeviceView, NodeView, PoolView
from poold.services import events
from poold.settings import Settings

log = logging.getLogger(__name__)

HELD_STATES = ("assigned", "running")


@dataclass
class PassResult:
    placed: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    lost_races: list[int] = field(default_factory=list)


def device_price(settings: Settings, model: str, attributes: dict) -> float:
    """Price per hour of a device: its model's price, times its fraction of the GPU for a MIG slice."""
    price = settings.price_of(model)
    slices = attributes.get("mig_slices")
    if slices:
        price *= float(slices) / 7.0
    return price


def device_view(
    source: DeviceModel | DeviceRecord, *, id: int, node: NodeView, parent_id: int | None, has_slices: bool, settings: Settings
) -> DeviceView:
    """The engine's view of a stored device (or of an agent's record, which has the same fields)."""
    return DeviceView(
        id=id,
        uuid=source.uuid,
        node=node,
        kind=source.kind,
        vendor=source.vendor,
        model=source.model,
        index=source.index,
        memory_total_mib=source.memory_total_mib,
        healthy=source.health == "ok",
        health_reason=source.health_reason,
        compute_capability=source.compute_capability,
        numa_node=source.numa_node,
        parent_id=parent_id,
        has_slices=has_slices,
        price_per_hour=device_price(settings, source.model, source.attributes),
        attributes=source.attributes,
    )


def build_view(session: Session, settings: Settings) -> PoolView:
    nodes = {
        node.id: NodeView(
            id=node.id,
            name=node.name,
            ready=node.state == "ready",
            drained=node.drained,
            cpu_cores=float(node.cpu_cores),
            memory_total_mib=node.memory_total_mib,
        )
        for node in session.scalars(select(NodeModel).order_by(NodeModel.name))
    }
    rows = session.scalars(select(DeviceModel).where(DeviceModel.present.is_(True)).order_by(DeviceModel.index, DeviceModel.id))
    devices = list(rows)
    parents = {device.parent_id for device in devices if device.parent_id is not None}
    views: dict[int, DeviceView] = {}
    for device in devices:
        node = nodes[device.node_id]
        view = device_view(
            device, id=device.id, node=node, parent_id=device.parent_id, has_slices=device.id in parents, settings=settings
        )
        views[device.id] = view
        node.devices.append(view)
    held = session.execute(
        select(AllocationModel.device_id, func.sum(AllocationModel.share), func.sum(AllocationModel.memory_mib))
        .where(AllocationModel.released_at.is_(None))
        .group_by(AllocationModel.device_id)
    )
    for device_id, share, memory in held:
        if device_id in views:
            views[device_id].free_share = max(0.0, 1.0 - float(share))
            views[device_id].memory_held_mib = int(memory or 0)
    active = session.execute(select(JobModel.node_id, JobModel.spec).where(JobModel.state.in_(HELD_STATES)))
    for node_id, spec in active:
        if node_id in nodes:
            resources = spec.get("resources", {})
            nodes[node_id].cpu_held += float(resources.get("cpu_cores", 0))
            nodes[node_id].memory_held_mib += int(resources.get("host_memory", 0))
    return PoolView(nodes=list(nodes.values()))


def pending_jobs(session: Session, limit: int) -> list[JobModel]:
    """Pending jobs in the order they are considered: queue priority, job priority, then age."""
    return list(
        session.scalars(
            select(JobModel)
            .join(QueueModel, QueueModel.name == JobModel.queue_name)
            .where(JobModel.state == "pending", JobModel.cancel_requested.is_(False))
            .order_by(QueueModel.priority.desc(), JobModel.priority.desc(), JobModel.id)
            .limit(limit)
        )
    )


def run_pass(factory: sessionmaker[Session], settings: Settings, stack: Stack | None = None) -> PassResult:
    stack = stack or build_stack()
    result = PassResult()
    with factory() as session:
        view = build_view(session, settings)
        jobs = [(job.id, job.reason, JobSpec.model_validate(job.spec)) for job in pending_jobs(session, settings.scheduler.max_jobs_per_pass)]
    waiting_reasons: dict[int, tuple[str | None, str]] = {}
    for job_id, old_reason, spec in jobs:
        request = PlacementRequest.from_spec(job_id, spec)
        decision = place(request, view, stack)
        if isinstance(decision, Unplaceable):
            result.waiting.append(job_id)
            waiting_reasons[job_id] = (old_reason, decision.reason)
            continue
        if commit_placement(factory, decision):
            apply_to_view(decision)
            result.placed.append(job_id)
        else:
            result.lost_races.append(job_id)
    _record_waiting(factory, waiting_reasons)
    return result


def commit_placement(factory: sessionmaker[Session], placement: Placement) -> bool:
    """Write the placement atomically; False when the job or a device changed since the view was read."""
    request, chosen = placement.request, placement.chosen
    device_ids = sorted(device.id for device in chosen.devices)
    with transaction(factory) as session:
        job = session.scalars(select(JobModel).where(JobModel.id == request.job_id).with_for_update()).one_or_none()
        if job is None or job.state != "pending" or job.cancel_requested:
            return False
        rows = session.scalars(
            select(DeviceModel).where(DeviceModel.id.in_(device_ids)).order_by(DeviceModel.id).with_for_update()
        ).all()
        node = session.get(NodeModel, chosen.node.id)
        if len(rows) != len(device_ids) or node is None or node.drained or node.state != "ready":
            return False
        if any(row.health != "ok" or not row.present for row in rows):
            return False
        held = dict(
            session.execute(
                select(AllocationModel.device_id, func.sum(AllocationModel.share))
                .where(AllocationModel.device_id.in_(device_ids), AllocationModel.released_at.is_(None))
                .group_by(AllocationModel.device_id)
            ).all()
        )
        for device_id in device_ids:
            if float(held.get(device_id, 0.0)) + request.share > 1.0 + EPSILON:
                log.info("job %s lost a race for device %s; it will be placed again", job.id, device_id)
                return False
        now = utcnow()
        for device in chosen.devices:
            session.add(
                AllocationModel(
                    job_id=job.id,
                    device_id=device.id,
                    share=request.share,
                    memory_mib=request.memory_to_hold(device),
                    price_per_hour=device.price_per_hour * request.share,
                    created_at=now,
                )
            )
        job.state, job.node_id, job.placed_at = "assigned", chosen.node.id, now
        job.price_per_hour = chosen.price_per_hour
        job.reason = placement.reason
        events.record(session, "job.placed", f"placed on {chosen.node.name}: {placement.reason}", job_id=job.id, node_id=chosen.node.id)
    return True


def apply_to_view(placement: Placement) -> None:
    request, chosen = placement.request, placement.chosen
    for device in chosen.devices:
        device.free_share = max(0.0, device.free_share - request.share)
        device.memory_held_mib += request.memory_to_hold(device) or 0
    chosen.node.cpu_held += request.cpu_cores
    chosen.node.memory_held_mib += request.host_memory_mib


def _record_waiting(factory: sessionmaker[Session], reasons: dict[int, tuple[str | None, str]]) -> None:
    """Store why each job waits; an event only when the reason changes, so the log stays readable."""
    changed = {job_id: new for job_id, (old, new) in reasons.items() if old != new}
    if not changed:
        return
    with transaction(factory) as session:
        for job in session.scalars(select(JobModel).where(JobModel.id.in_(changed), JobModel.state == "pending")):
            job.reason = changed[job.id]
            events.record(session, "job.waiting", changed[job.id], job_id=job.id)
