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

from poold.db.models import AllocationModel, DeviceModel, NodeModel, utcnow
from poold.scheduler.snapshot import device_price
from poold.services.nodes import allocated_shares
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
    rows = session.execute(
        select(DeviceModel, NodeModel.name, NodeModel.state, NodeModel.drained)
        .join(NodeModel, NodeModel.id == DeviceModel.node_id)
        .where(DeviceModel.present.is_(True))
    ).all()
    held_share = allocated_shares(session)
    held_memory = _held_memory(session)
    devices = {device.id: device for device, *_ in rows}
    slices_of: dict[int, list[int]] = {}
    for device in devices.values():
        if device.parent_id is not None and device.parent_id in devices:
            slices_of.setdefault(device.parent_id, []).append(device.id)
    fresh_after = utcnow() - timedelta(seconds=3 * settings.nodes.heartbeat_interval_s)
    models: dict[str, ModelOverview] = {}
    utilization: dict[str, list[float]] = {}
    for device, node_name, node_state, drained in rows:
        overview = models.setdefault(device.model, ModelOverview(device.model, device.kind))
        usable = device.in_service and node_state == "ready"
        placeable = usable and not drained
        share = held_share.get(device.id, 0.0)
        overview.memory_allocated_mib += held_memory.get(device.id, 0)
        if device.parent_id is not None and device.parent_id in devices:  # a MIG slice
            profile = str(device.attributes.get("mig_profile") or device.name or "slice")
            count = overview.mig.setdefault(profile, MigCount())
            count.total += 1
            count.free += placeable and share == 0.0
            overview.allocated += whole_devices(share, device.attributes)
            continue
        overview.devices += 1
        overview.in_service += usable
        overview.memory_total_mib += device.memory_total_mib or 0
        overview.price_per_hour = device_price(settings, device.model, device.attributes)
        overview.allocated += share
        busy = share > 0.0 or any(held_share.get(slice_id, 0.0) > 0.0 for slice_id in slices_of.get(device.id, ()))
        overview.free += placeable and not busy
        figure = _utilization(usage, node_name, device.uuid, fresh_after)
        if figure is not None:
            utilization.setdefault(device.model, []).append(figure)
    for name, overview in models.items():
        overview.allocated = round(overview.allocated, 6)
        if fragmentation is not None and name in fragmentation:
            overview.fragmentation = round(fragmentation[name], 6)
        if utilization.get(name):
            overview.utilization_pct = round(sum(utilization[name]) / len(utilization[name]), 2)
    return sorted(models.values(), key=lambda overview: (overview.kind, overview.model))


def _held_memory(session: Session) -> dict[int, int]:
    """Device id -> device memory (MiB) held by active allocations."""
    rows = session.execute(
        select(AllocationModel.device_id, func.sum(AllocationModel.memory_mib))
        .where(AllocationModel.released_at.is_(None), AllocationModel.device_id.is_not(None))
        .group_by(AllocationModel.device_id)
    )
    return {device_id: int(total or 0) for device_id, total in rows}


def _utilization(usage: NodeReports | None, node: str, uuid: str, fresh_after: datetime) -> float | None:
    if usage is None:
        return None
    figures = usage.usage(node)
    if figures is None or figures.at < fresh_after:
        return None
    value = figures.devices.get(uuid, {}).get("utilization_pct")
    return float(value) if value is not None else None
