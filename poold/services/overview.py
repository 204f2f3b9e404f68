"""The pool at a glance, by device model: for ``poold pool``, ``poold top``, the dashboard and
``/metrics``.

Counts are read from the store (every replica answers alike); fragmentation is the leader's
scheduler's measure (``Scheduler.fragmentation_by_model``), and utilisation the agents'
latest figures as this daemon heard them, so both may be missing on a replica.

A GPU split into MIG slices counts once among its model's ``devices``; its slices are counted
by profile in ``mig``, and what they hold counts towards ``allocated`` as their part of the
GPU (slices of 7), as prices count it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from poold.db.models import AllocationModel, DeviceModel, NodeModel, in_service, utcnow
from poold.scheduler.snapshot import device_price
from poold.services.nodes import split_gpus_in_use
from poold.services.queue_usage import whole_devices
from poold.settings import Settings
from poold.telemetry import NodeReports


@dataclass
class MigCount:
    """MIG slices of one profile: how many there are, and how many are free (in service, nothing held)."""

    total: int = 0
    free: int = 0


@dataclass
class ModelOverview:
    """One device model across the pool. Devices are whole devices (GPUs, NPUs, FPGAs);
    ``allocated`` is in whole-device units (a share its fraction, a MIG slice its slices of 7);
    memory is MiB; ``price_per_hour`` is one whole device's."""

    model: str
    kind: str
    devices: int = 0
    in_service: int = 0
    free: int = 0
    allocated: float = 0.0
    memory_total_mib: int = 0
    memory_allocated_mib: int = 0
    mig: dict[str, MigCount] = field(default_factory=dict)
    price_per_hour: float = 0.0
    fragmentation: float | None = None
    utilization_pct: float | None = None


def pool_overview(
    session: Session, settings: Settings, *, fragmentation: Mapping[str, float] | None = None, usage: NodeReports | None = None,
) -> list[ModelOverview]:
    """Every model present in the pool, by kind then model name.

    A device is in service when it reports healthy, is not quarantined or scrubbed, and its
    node is ready; free when it is in service on an undrained node and nothing is held on it
    or on any of its slices. ``fragmentation``: model -> ratio (models it leaves out get
    None). ``usage``: the agents' latest figures; only figures younger than three heartbeat
    intervals count towards ``utilization_pct``."""
    # Columns, not ORM objects (a tenth of the time at 40,000 devices); the attributes (a JSON
    # document each, NVLink maps included) are read for MIG slices only.
    rows = session.execute(
        select(DeviceModel.id, DeviceModel.parent_id, DeviceModel.uuid, DeviceModel.kind, DeviceModel.model, DeviceModel.name,
               DeviceModel.memory_total_mib, DeviceModel.health, DeviceModel.quarantined_at, DeviceModel.scrubbing_since,
               NodeModel.name, NodeModel.state, NodeModel.drained)
        .join(NodeModel, NodeModel.id == DeviceModel.node_id)
        .where(DeviceModel.present.is_(True))
    ).all()
    held = _held(session)
    present = {row[0] for row in rows}
    slice_attributes = dict(session.execute(
        select(DeviceModel.id, DeviceModel.attributes).where(DeviceModel.present.is_(True), DeviceModel.parent_id.is_not(None))
    ).all())
    busy_parents = split_gpus_in_use(((row[0], row[1]) for row in rows), {device_id: share for device_id, (share, _) in held.items()})
    fresh_after = utcnow() - timedelta(seconds=3 * settings.nodes.heartbeat_interval_s)
    models: dict[str, ModelOverview] = {}
    utilization: dict[str, list[float]] = {}
    for (device_id, parent, uuid, kind, model, name, memory_total, health, quarantined, scrubbing,
         node_name, node_state, drained) in rows:
        overview = models.setdefault(model, ModelOverview(model, kind))
        usable = in_service(health, quarantined, scrubbing) and node_state == "ready"
        placeable = usable and not drained
        share, memory = held.get(device_id, (0.0, 0))
        overview.memory_allocated_mib += memory
        if parent is not None and parent in present:  # a MIG slice
            attributes = slice_attributes.get(device_id) or {}
            count = overview.mig.setdefault(str(attributes.get("mig_profile") or name or "slice"), MigCount())
            count.total += 1
            count.free += placeable and share == 0.0
            overview.allocated += whole_devices(share, attributes)
            continue
        overview.devices += 1
        overview.in_service += usable
        overview.memory_total_mib += memory_total or 0
        overview.price_per_hour = device_price(settings, model, {})
        overview.allocated += share
        overview.free += placeable and share == 0.0 and device_id not in busy_parents
        figure = _utilization(usage, node_name, uuid, fresh_after)
        if figure is not None:
            utilization.setdefault(model, []).append(figure)
    for name, overview in models.items():
        overview.allocated = round(overview.allocated, 6)
        if fragmentation is not None and name in fragmentation:
            overview.fragmentation = round(fragmentation[name], 6)
        if utilization.get(name):
            overview.utilization_pct = round(sum(utilization[name]) / len(utilization[name]), 2)
    return sorted(models.values(), key=lambda overview: (overview.kind, overview.model))


def _held(session: Session) -> dict[int, tuple[float, int]]:
    """Device id -> (share, device memory in MiB) held by active allocations."""
    rows = session.execute(
        select(AllocationModel.device_id, func.sum(AllocationModel.share), func.sum(AllocationModel.memory_mib))
        .where(AllocationModel.released_at.is_(None), AllocationModel.device_id.is_not(None))
        .group_by(AllocationModel.device_id)
    )
    return {device_id: (float(share or 0.0), int(memory or 0)) for device_id, share, memory in rows}


def _utilization(usage: NodeReports | None, node: str, uuid: str, fresh_after: datetime) -> float | None:
    if usage is None:
        return None
    figures = usage.usage(node)
    if figures is None or figures.at < fresh_after:
        return None
    value = figures.devices.get(uuid, {}).get("utilization_pct")
    return float(value) if value is not None else None
