"""Nodes and their devices: registration, heartbeats, drain, and marking silent nodes down."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from poold.db.models import AllocationModel, DeviceModel, NodeModel, utcnow
from poold.services import NotFound, ServiceError, events
from poold_wire.messages import PROTOCOL_VERSION
from poold_wire.records import DeviceRecord, HostRecord

_USAGE_FIELDS = ("power_w", "power_limit_w", "temperature_c", "utilization_pct")
# Device attributes placement reads; a change in any of them moves the node's generation.
PLACEMENT_ATTRIBUTES = ("mig_profile", "mig_slices", "fpga_shell", "nvlink", "pcie")
# Memory used outside poold moves the generation only when it changes by this much (MiB):
# placement needs it, but it jitters with every process that allocates.
OUTSIDE_MEMORY_STEP_MIB = 256


# The agent protocols this daemon serves: its own and the older ones it still answers.
SERVED_PROTOCOLS = range(1, PROTOCOL_VERSION + 1)


class UnsupportedProtocol(ServiceError):
    status = 400


def check_protocol(version: int) -> None:
    """Refuse, naming both versions, an agent whose protocol this daemon cannot serve."""
    if version in SERVED_PROTOCOLS:
        return
    lo, hi = SERVED_PROTOCOLS[0], SERVED_PROTOCOLS[-1]
    served = f"protocol {hi}" if lo == hi else f"protocols {lo} to {hi}"
    newer = "the daemon" if version > hi else "the agent"
    raise UnsupportedProtocol(
        f"the agent speaks protocol {version}, this daemon serves agent {served}: upgrade {newer}", field="protocol_version"
    )


def touch(session: Session, node_ids: list[int] | set[int]) -> None:
    """Move the generation of these nodes: something placement reads about them changed."""
    if node_ids:
        session.execute(update(NodeModel).where(NodeModel.id.in_(sorted(node_ids))).values(generation=NodeModel.generation + 1))


def get_node(session: Session, name: str, *, lock: bool = False) -> NodeModel:
    query = select(NodeModel).where(NodeModel.name == name)
    if lock:
        query = query.with_for_update()
    node = session.scalars(query).one_or_none()
    if node is None:
        raise NotFound(f"no node named {name!r}")
    return node


def register(
    session: Session, name: str, host: HostRecord, devices: list[DeviceRecord], agent_version: str
) -> NodeModel:
    """Create the node or refresh it. A drained node stays drained across agent restarts."""
    node = session.scalars(select(NodeModel).where(NodeModel.name == name).with_for_update()).one_or_none()
    if node is None:
        node = NodeModel(name=name, hostname=host.hostname)
        session.add(node)
        session.flush()
        events.record(session, "node.registered", f"node {name} registered", node_id=node.id)
    elif node.state != "ready":
        events.record(session, "node.ready", f"node {name} is back", node_id=node.id)
    node.agent_version = agent_version
    _apply_report(session, node, host, devices)
    return node


def heartbeat(session: Session, name: str, host: HostRecord, devices: list[DeviceRecord]) -> NodeModel:
    node = get_node(session, name, lock=True)
    if node.state != "ready":
        events.record(session, "node.ready", f"node {name} is back", node_id=node.id)
    _apply_report(session, node, host, devices)
    return node


def _apply_report(session: Session, node: NodeModel, host: HostRecord, devices: list[DeviceRecord]) -> None:
    before = (node.cpu_cores, node.memory_total_mib, node.state)
    node.hostname = host.hostname
    node.cpu_cores = host.cpu_cores
    node.memory_total_mib = host.memory_total_mib
    node.host = host.model_dump(mode="json")
    node.state = "ready"
    node.last_heartbeat_at = utcnow()
    changed = sync_devices(session, node, devices)
    if changed or before != (node.cpu_cores, node.memory_total_mib, node.state):
        node.generation = (node.generation or 0) + 1


def _placement_facts(device: DeviceModel) -> tuple[Any, ...]:
    attributes = device.attributes or {}
    return (
        device.present, device.vendor, device.kind, device.model, device.index, device.memory_total_mib,
        device.compute_capability, device.numa_node, device.health, device.health_reason, device.parent_id,
        tuple(repr(attributes.get(key)) for key in PLACEMENT_ATTRIBUTES),
        (device.memory_outside_mib or 0) // OUTSIDE_MEMORY_STEP_MIB,
    )


def sync_devices(session: Session, node: NodeModel, records: list[DeviceRecord]) -> bool:
    """Upsert the node's devices by uuid, link slices to parents, and mark vanished ones absent.

    A device changing health writes an event, so ``poold job``/``poold devices`` can say why.
    Returns whether anything placement reads changed (usage figures alone do not count).
    """
    existing = {device.uuid: device for device in session.scalars(select(DeviceModel).where(DeviceModel.node_id == node.id))}
    before = {uuid: _placement_facts(device) for uuid, device in existing.items()}
    reported = {record.uuid for record in records}
    now = utcnow()
    for record in records:
        device = existing.get(record.uuid)
        if device is None:
            device = DeviceModel(uuid=record.uuid, node_id=node.id)
            session.add(device)
            existing[record.uuid] = device
        if device.health != record.health and device.id is not None:
            kind = "device.unhealthy" if record.health != "ok" else "device.healthy"
            reason = f": {record.health_reason}" if record.health_reason else ""
            events.record(session, kind, f"{record.model} {record.uuid} is {record.health}{reason}", node_id=node.id)
        device.vendor, device.kind, device.model, device.name = record.vendor, record.kind, record.model, record.name
        device.index, device.bus_id = record.index, record.bus_id
        device.memory_total_mib, device.memory_free_mib = record.memory_total_mib, record.memory_free_mib
        device.memory_outside_mib = record.memory_outside_mib
        device.compute_capability, device.architecture = record.compute_capability, record.architecture
        device.numa_node = record.numa_node
        device.health, device.health_reason = record.health, record.health_reason
        device.attributes = record.attributes
        device.usage = {field: getattr(record, field) for field in _USAGE_FIELDS}
        device.present = True
        device.updated_at = now
    session.flush()
    for record in records:
        parent = existing.get(record.parent_uuid) if record.parent_uuid else None
        existing[record.uuid].parent_id = parent.id if parent is not None else None
    for uuid, device in existing.items():
        if uuid not in reported and device.present:
            device.present = False
            events.record(session, "device.gone", f"{device.model} {uuid} is no longer reported", node_id=node.id)
    return any(before.get(uuid) != _placement_facts(device) for uuid, device in existing.items())


def set_drained(session: Session, name: str, drained: bool, reason: str | None = None) -> NodeModel:
    node = get_node(session, name, lock=True)
    if node.drained != drained:
        node.drained = drained
        node.generation += 1
        node.drain_reason = reason if drained else None
        verb = "drained" if drained else "undrained"
        events.record(session, f"node.{verb}", f"node {name} {verb}" + (f": {reason}" if reason else ""), node_id=node.id)
    return node


def mark_silent_nodes_down(session: Session, timeout_s: float, now: datetime | None = None) -> list[str]:
    """Nodes whose last heartbeat is older than ``timeout_s`` go ``down``; returns their names."""
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(seconds=timeout_s)
    silent = session.scalars(
        select(NodeModel).where(NodeModel.state == "ready", NodeModel.last_heartbeat_at < cutoff).with_for_update()
    ).all()
    for node in silent:
        node.state = "down"
        node.generation += 1
        events.record(session, "node.down", f"node {node.name} missed heartbeats for {timeout_s:.0f} s", node_id=node.id)
    return [node.name for node in silent]


def list_nodes(session: Session) -> list[tuple[NodeModel, int, int]]:
    """Each node with its count of allocatable devices and how many of those are free."""
    nodes = session.scalars(select(NodeModel).order_by(NodeModel.name)).all()
    devices = session.scalars(select(DeviceModel).where(DeviceModel.present.is_(True))).all()
    held = allocated_shares(session)
    parents = {device.parent_id for device in devices if device.parent_id is not None}
    totals: dict[int, list[int]] = {node.id: [0, 0] for node in nodes}
    for device in devices:
        if device.id in parents:
            continue  # a GPU split into MIG slices is counted through its slices
        totals[device.node_id][0] += 1
        if held.get(device.id, 0.0) == 0 and device.health == "ok":
            totals[device.node_id][1] += 1
    return [(node, *totals[node.id]) for node in nodes]


def list_devices(session: Session, node: str | None = None) -> list[DeviceModel]:
    query = select(DeviceModel).join(NodeModel).where(DeviceModel.present.is_(True))
    if node is not None:
        query = query.where(NodeModel.name == node)
    return list(session.scalars(query.order_by(NodeModel.name, DeviceModel.index, DeviceModel.uuid)))


def allocated_shares(session: Session) -> dict[int, float]:
    """Device id -> share held by active allocations."""
    rows = session.execute(
        select(AllocationModel.device_id, func.sum(AllocationModel.share))
        .where(AllocationModel.released_at.is_(None), AllocationModel.device_id.is_not(None))
        .group_by(AllocationModel.device_id)
    )
    return {device_id: float(total) for device_id, total in rows}
