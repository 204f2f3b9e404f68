"""Nodes and their devices: registration, heartbeats, drain (lost nodes: ``poold.services.recovery``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from poold.db.ids import among
from poold.db.models import AllocationModel, DeviceModel, NodeModel, utcnow
from poold.services import Conflict, NotFound, ServiceError, events, quarantine
from poold.settings import NodeSettings
from poold_wire.messages import PROTOCOL_VERSION
from poold_wire.records import DeviceRecord, HostRecord

# Usage figures move with every heartbeat; they are kept in memory (``poold.telemetry``), never
# in the store.
DEVICE_USAGE = ("power_w", "power_limit_w", "temperature_c", "utilization_pct", "memory_free_mib")
HOST_USAGE = ("load_1m", "memory_available_mib")
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
        session.execute(update(NodeModel).where(among(NodeModel.id, sorted(node_ids))).values(generation=NodeModel.generation + 1))


def get_node(session: Session, name: str, *, lock: bool = False) -> NodeModel:
    query = select(NodeModel).where(NodeModel.name == name)
    if lock:
        query = query.with_for_update()
    node = session.scalars(query).one_or_none()
    if node is None:
        raise NotFound(f"no node named {name!r}")
    return node


def register(
    session: Session, name: str, host: HostRecord, devices: list[DeviceRecord], agent_version: str,
    machine_id: str | None = None, settings: NodeSettings | None = None,
) -> NodeModel:
    """Create the node or refresh it. A drained node stays drained across agent restarts.

    The name belongs to the machine that registered it (``machine_id``): another machine may
    take it over only once the node is lost; while it lives, the claim is refused with 409.
    """
    node = session.scalars(select(NodeModel).where(NodeModel.name == name).with_for_update()).one_or_none()
    if node is None:
        node = NodeModel(name=name, hostname=host.hostname, machine_id=machine_id)
        session.add(node)
        session.flush()
        events.record(session, "node.registered", f"node {name} registered", node_id=node.id)
    elif _other_machine(node, machine_id):
        if node.state != "lost":
            raise Conflict(
                f"node {name} belongs to machine {node.machine_id}, whose agent is alive (last heartbeat "
                f"{node.last_heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); this agent runs on machine {machine_id}. "
                "Give it another node_name, or stop the other agent and wait until the node is lost"
            )
        events.record(session, "node.machine_changed",
                      f"node {name} is now machine {machine_id} (was {node.machine_id}, lost)", node_id=node.id)
        node.running_jobs = []
    elif node.state != "ready":
        events.record(session, "node.ready", f"node {name} is back", node_id=node.id)
    node.machine_id = machine_id or node.machine_id
    node.agent_version = agent_version
    _apply_report(session, node, host, devices, settings or NodeSettings(), utcnow())
    return node


def check_machine(node: NodeModel, machine_id: str | None) -> None:
    """Refuse (409) a report about ``node`` from another machine than the one holding its name."""
    if _other_machine(node, machine_id):
        raise Conflict(f"node {node.name} belongs to machine {node.machine_id}; this report comes from machine {machine_id}")


def _other_machine(node: NodeModel, machine_id: str | None) -> bool:
    """Whether ``machine_id`` is known to differ from the node's (agents too old to send one are let be)."""
    return node.machine_id is not None and machine_id is not None and machine_id != node.machine_id


def heartbeat(
    session: Session, name: str, host: HostRecord, devices: list[DeviceRecord], running_jobs: list[int] | None = None,
    settings: NodeSettings | None = None, now: datetime | None = None,
) -> NodeModel:
    """Refresh the node from its agent's report; ``running_jobs`` (the ids the agent runs) is
    kept, so that assignments can tell the agent to kill what the daemon no longer holds there.
    ``settings`` rule the devices' quarantine (``poold.services.quarantine``)."""
    node = get_node(session, name, lock=True)
    if node.state != "ready":
        events.record(session, "node.ready", f"node {name} is back", node_id=node.id)
    if running_jobs is not None:
        node.running_jobs = sorted(set(running_jobs))
    _apply_report(session, node, host, devices, settings or NodeSettings(), now or utcnow())
    return node


def _apply_report(
    session: Session, node: NodeModel, host: HostRecord, devices: list[DeviceRecord], settings: NodeSettings, now: datetime
) -> None:
    before = (node.cpu_cores, node.memory_total_mib, node.state, (node.host or {}).get("network"))
    node.hostname = host.hostname
    node.cpu_cores = host.cpu_cores
    node.memory_total_mib = host.memory_total_mib
    node.host = host.model_dump(mode="json", exclude=set(HOST_USAGE))
    node.state = "ready"
    node.last_heartbeat_at = now
    changed = sync_devices(session, node, devices, settings, now)
    if changed or before != (node.cpu_cores, node.memory_total_mib, node.state, host.network):
        node.generation = (node.generation or 0) + 1
        node.layout_generation = (node.layout_generation or 0) + 1


def _placement_facts(device: DeviceModel) -> tuple[Any, ...]:
    attributes = device.attributes or {}
    return (
        device.present, device.vendor, device.kind, device.model, device.index, device.memory_total_mib,
        device.compute_capability, device.numa_node, device.health, device.health_reason, device.parent_id,
        device.quarantined_at, device.quarantine_held,
        tuple(repr(attributes.get(key)) for key in PLACEMENT_ATTRIBUTES),
        (device.memory_outside_mib or 0) // OUTSIDE_MEMORY_STEP_MIB,
    )


def sync_devices(
    session: Session, node: NodeModel, records: list[DeviceRecord], settings: NodeSettings | None = None, now: datetime | None = None
) -> bool:
    """Upsert the node's devices by uuid, link slices to parents, and mark vanished ones absent.

    A device changing health writes an event, so ``poold job``/``poold devices`` can say why,
    and starts or times its quarantine. Returns whether anything placement reads changed
    (usage figures alone do not count).
    """
    settings = settings or NodeSettings()
    existing = {device.uuid: device for device in session.scalars(select(DeviceModel).where(DeviceModel.node_id == node.id))}
    before = {uuid: _placement_facts(device) for uuid, device in existing.items()}
    reported = {record.uuid for record in records}
    now = now or utcnow()
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
        device.memory_total_mib = record.memory_total_mib
        device.memory_outside_mib = record.memory_outside_mib
        device.compute_capability, device.architecture = record.compute_capability, record.architecture
        device.numa_node = record.numa_node
        was, device.health, device.health_reason = device.health, record.health, record.health_reason
        device.attributes = record.attributes
        device.present = True
        quarantine.observe(session, device, was, settings, now)
    session.flush()
    for record in records:
        parent = existing.get(record.parent_uuid) if record.parent_uuid else None
        existing[record.uuid].parent_id = parent.id if parent is not None else None
    for uuid, device in existing.items():
        if uuid not in reported and device.present:
            device.present = False
            events.record(session, "device.gone", f"{device.model} {uuid} is no longer reported", node_id=node.id)
    changed = False
    for uuid, device in existing.items():
        if before.get(uuid) != _placement_facts(device):
            device.updated_at = now
            changed = True
    return changed


def set_drained(session: Session, name: str, drained: bool, reason: str | None = None) -> NodeModel:
    node = get_node(session, name, lock=True)
    if node.drained != drained:
        node.drained = drained
        node.generation += 1
        node.drain_reason = reason if drained else None
        verb = "drained" if drained else "undrained"
        events.record(session, f"node.{verb}", f"node {name} {verb}" + (f": {reason}" if reason else ""), node_id=node.id)
    return node


def release_quarantines(session: Session, now: datetime | None = None) -> list[str]:
    """Return to service the devices whose timed quarantine has run out; their uuids.

    Locks the devices' nodes, then the devices (the lock order), re-checks each under lock,
    and moves the nodes' generation so the scheduler sees the devices back.
    """
    now = now or utcnow()
    due = (DeviceModel.quarantine_until <= now, DeviceModel.quarantine_held.is_(False), DeviceModel.health == "ok")
    node_ids = sorted(set(session.scalars(select(DeviceModel.node_id).where(*due))))
    if not node_ids:
        return []
    session.execute(select(NodeModel.id).where(NodeModel.id.in_(node_ids)).order_by(NodeModel.id).with_for_update())
    devices = session.scalars(select(DeviceModel).where(DeviceModel.node_id.in_(node_ids), *due).order_by(DeviceModel.id).with_for_update()).all()
    for device in devices:
        quarantine.release(session, device, "healthy for the whole quarantine")
    touch(session, {device.node_id for device in devices})
    return [device.uuid for device in devices]


def return_device(session: Session, uuid: str, node: str | None = None) -> DeviceModel:
    """An administrator returns a quarantined device to service (``poold devices return``), or
    one whose scrub its agent will never report (it stays ``scrubbing`` until then).

    Refused while the device still reports unhealthy. ``node`` names the node when the uuid is
    not unique (NPU and FPGA ids are built from bus ids, unique per node only).
    """
    query = select(DeviceModel.id, NodeModel.id, NodeModel.name).join(NodeModel).where(DeviceModel.uuid == uuid, DeviceModel.present.is_(True))
    if node is not None:
        query = query.where(NodeModel.name == node)
    found = session.execute(query).all()
    if not found:
        raise NotFound(f"no device {uuid}" + (f" on node {node}" if node else ""))
    if len(found) > 1:
        raise Conflict(f"device {uuid} is on several nodes ({', '.join(sorted(row[2] for row in found))}): name one")
    [(device_id, node_id, node_name)] = found
    get_node(session, node_name, lock=True)
    device = session.scalars(select(DeviceModel).where(DeviceModel.id == device_id).with_for_update()).one()
    if device.quarantined_at is None and device.scrubbing_since is None:
        raise Conflict(f"device {uuid} is not quarantined")
    if device.health != "ok":
        raise Conflict(f"device {uuid} still reports {device.health} ({device.health_reason or 'no reason given'}); "
                       "it can be returned once it reports healthy")
    if device.scrubbing_since is not None:  # its agent lost track of the scrub (its state_dir was wiped)
        events.record(session, "device.scrub_abandoned", f"{device.model} {uuid}: the scrub after job {device.scrub_job_id} "
                      "is no longer awaited (returned by an administrator)", node_id=node_id)
        device.scrubbing_since = device.scrub_job_id = None
    if device.quarantined_at is not None:
        quarantine.release(session, device, "returned by an administrator")
    touch(session, [node_id])
    return device


@dataclass(frozen=True)
class NodeCounts:
    """What a node has, counted apart: whole devices (GPUs, NPUs, FPGAs; a GPU in MIG mode is
    one) and MIG slices. A whole device is free when it is in service and nothing is held on it
    or on its slices; a slice when it is in service and nothing is held on it."""

    devices: int = 0
    devices_free: int = 0
    slices: int = 0
    slices_free: int = 0


def list_nodes(session: Session) -> list[tuple[NodeModel, NodeCounts]]:
    """Each node with its counts of whole devices and MIG slices, and how many of each are free."""
    nodes = session.scalars(select(NodeModel).order_by(NodeModel.name)).all()
    devices = session.scalars(select(DeviceModel).where(DeviceModel.present.is_(True))).all()
    held = allocated_shares(session)
    busy_parents = split_gpus_in_use(((device.id, device.parent_id) for device in devices), held)
    totals: dict[int, list[int]] = {node.id: [0, 0, 0, 0] for node in nodes}
    for device in devices:
        counts = totals[device.node_id]
        free = device.in_service and held.get(device.id, 0.0) == 0
        if device.parent_id is None:
            counts[0] += 1
            counts[1] += free and device.id not in busy_parents
        else:
            counts[2] += 1
            counts[3] += free
    return [(node, NodeCounts(*totals[node.id])) for node in nodes]


def list_devices(session: Session, node: str | None = None) -> list[DeviceModel]:
    query = select(DeviceModel).join(NodeModel).where(DeviceModel.present.is_(True))
    if node is not None:
        query = query.where(NodeModel.name == node)
    return list(session.scalars(query.order_by(NodeModel.name, DeviceModel.index, DeviceModel.uuid)))


def split_gpus_in_use(devices: Iterable[tuple[int, int | None]], held: Mapping[int, float]) -> set[int]:
    """Of ``devices`` (id, parent id), the GPUs one of whose MIG slices holds a share: not
    free, though nothing is held on the GPU itself. ``held``: device id -> share held."""
    return {parent for device_id, parent in devices if parent is not None and held.get(device_id, 0.0) > 0}


def allocated_shares(session: Session) -> dict[int, float]:
    """Device id -> share held by active allocations."""
    rows = session.execute(
        select(AllocationModel.device_id, func.sum(AllocationModel.share))
        .where(AllocationModel.released_at.is_(None), AllocationModel.device_id.is_not(None))
        .group_by(AllocationModel.device_id)
    )
    return {device_id: float(total) for device_id, total in rows}
