"""The store's pool as the engine sees it: the columnar pool, kept up to date by node generation.

Each pass first asks the store for a digest of the nodes' generations (how many nodes, the
sum of their generations, the highest id: one row). Generations only grow and nodes are never
deleted through poold, so a digest equal to that of the generations this snapshot holds
means nothing changed, and the pass reads nothing more: this is the usual case on a busy
pool, where the pass's own commits move generations it already holds (``committed``).
Otherwise it reads every node's ``generation`` and reloads only the nodes whose generation
moved since it last read them: their row, their present devices, and the sums of their
active allocations. A heartbeat that changes nothing placement reads leaves the generation
alone and costs the snapshot nothing. Generations are read before the rows they cover, so a
change racing with the reload is seen again on the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from poold.db.ids import among
from poold.db.models import AllocationModel, DeviceModel, JobModel, NodeModel
from poold.scheduler.pool import ColumnarPool, DeviceSpec, DeviceState, Holding, NodeSpec
from poold.services import quarantine, scrub
from poold.settings import Settings
from poold_wire.records import DeviceRecord

log = logging.getLogger(__name__)

RELOAD_CHUNK = 500


def device_price(settings: Settings, model: str, attributes: dict[str, Any]) -> float:
    """Price per hour of a device: its model's price, times its fraction of the GPU for a MIG slice."""
    price = settings.price_of(model)
    slices = attributes.get("mig_slices")
    if isinstance(slices, int) and 0 < slices <= 7:
        price *= slices / 7.0
    return price


def device_spec(source: DeviceModel | DeviceRecord, *, id: int, parent_id: int | None, settings: Settings) -> DeviceSpec:
    """The engine's facts about a stored device (or an agent's record, which has the same fields)."""
    attributes = source.attributes if isinstance(source.attributes, dict) else {}
    profile = attributes.get("mig_profile")
    slices = attributes.get("mig_slices")
    shell = attributes.get("fpga_shell")
    return DeviceSpec(
        id=id,
        uuid=source.uuid,
        kind=source.kind,
        model=source.model,
        index=source.index,
        memory_total_mib=source.memory_total_mib,
        compute_capability=source.compute_capability,
        numa_node=source.numa_node,
        parent_id=parent_id,
        mig_profile=profile.lower() if isinstance(profile, str) else None,
        mig_slices=slices if isinstance(slices, int) and 0 < slices <= 7 else 0,
        fpga_shell=shell if isinstance(shell, str) else None,
        price_per_hour=device_price(settings, source.model, attributes),
        nvlink=_pairs(attributes.get("nvlink"), int),
        pcie=_pairs(attributes.get("pcie"), str),
    )


def device_state(
    source: DeviceModel | DeviceRecord, held_share: float = 0.0, held_memory_mib: int = 0, quarantined: str | None = None
) -> DeviceState:
    """What changes often on a device. ``quarantined`` (why a device that reports healthy is
    still out of service: :func:`out_of_service`) makes it unhealthy for placement, with that reason."""
    return DeviceState(
        healthy=source.health == "ok" and quarantined is None,
        health_reason=source.health_reason if source.health != "ok" else quarantined,
        memory_outside_mib=source.memory_outside_mib or 0,
        held_share=held_share,
        held_memory_mib=held_memory_mib,
    )


def out_of_service(device: DeviceModel) -> str | None:
    """Why placement must not use a device that reports healthy (quarantined, being scrubbed), or None."""
    return quarantine.placement_note(device) or scrub.placement_note(device)


def node_spec(node: NodeModel) -> NodeSpec:
    return NodeSpec(
        id=node.id,
        name=node.name,
        cpu_cores=float(node.cpu_cores),
        memory_total_mib=node.memory_total_mib,
        ready=node.state == "ready",
        drained=node.drained,
        network=network_of(node),
    )


def network_of(node: NodeModel) -> str | None:
    """The network label the node's agent reports (kept in ``nodes.host``), or None."""
    network = node.host.get("network") if isinstance(node.host, dict) else None
    return network if isinstance(network, str) and network else None


def _pairs(value: Any, kind: type) -> tuple:
    if not isinstance(value, dict):
        return ()
    return tuple(sorted((str(peer), item) for peer, item in value.items() if isinstance(item, kind) and not isinstance(item, bool)))


class StoreSnapshot:
    """A columnar pool mirroring the store; :meth:`refresh` brings it up to date.

    With ``capacity_only`` it mirrors what the pool could hold at best: every node up and
    undrained, every device healthy and idle (for telling jobs that can never fit)."""

    def __init__(self, settings: Settings, pool: ColumnarPool | None = None, capacity_only: bool = False):
        self.settings = settings
        self.pool = pool or ColumnarPool()
        self.capacity_only = capacity_only
        self.generations: dict[int, int] = {}
        # Nodes whose rows could not be read, out of the pool until they change: id -> (name, why).
        self.set_aside: dict[int, tuple[str, str]] = {}

    def refresh(self, session: Session) -> int:
        """Reload the nodes that changed in the store; returns how many were reloaded. A node
        whose rows cannot be read is taken out of the pool (``set_aside``) until it changes."""
        # The pool at its best ignores what nodes hold: it follows the layout generation.
        column = "layout_generation" if self.capacity_only else "generation"
        connection = session.connection()
        digest = tuple(connection.exec_driver_sql(f"SELECT count(*), coalesce(sum({column}), 0), coalesce(max(id), 0) FROM nodes").one())
        if digest == self._digest():
            return 0
        # Plain tuples: half the time of an ORM select.
        current = dict(connection.exec_driver_sql(f"SELECT id, {column} FROM nodes").fetchall())
        for node_id in set(self.generations) - set(current):
            self.pool.remove_node(node_id)
            del self.generations[node_id]
            self.set_aside.pop(node_id, None)
        stale = [node_id for node_id, generation in current.items() if self.generations.get(node_id) != generation]
        for start in range(0, len(stale), RELOAD_CHUNK):
            chunk = stale[start : start + RELOAD_CHUNK]
            self._reload(session, chunk)
            for node_id in chunk:
                self.generations[node_id] = current[node_id]
        return len(stale)

    def _digest(self) -> tuple[int, int, int]:
        """The store's digest (``refresh``) if it holds exactly the generations this snapshot holds."""
        return len(self.generations), sum(self.generations.values()), max(self.generations, default=0)

    def committed(self, generations: dict[int, tuple[int, int]]) -> None:
        """The pass committed placements it already holds in the pool, moving these nodes'
        generations (under lock, from → to): a node this snapshot had read at ``from`` is
        current at ``to`` without a reload; any other is reloaded as usual."""
        for node_id, (before, after) in generations.items():
            if self.generations.get(node_id) == before:
                self.generations[node_id] = after

    def _reload(self, session: Session, node_ids: Iterable[int]) -> None:
        node_ids = list(node_ids)
        nodes = session.scalars(select(NodeModel).where(among(NodeModel.id, node_ids))).all()
        devices: dict[int, list[DeviceModel]] = {node_id: [] for node_id in node_ids}
        for device in session.scalars(select(DeviceModel).where(among(DeviceModel.node_id, node_ids), DeviceModel.present.is_(True))):
            devices[device.node_id].append(device)
        held = _Held()
        if not self.capacity_only:
            # A gang's parts hold for the job as submitted, as the pass applies a gang's placement.
            holder = func.coalesce(JobModel.gang_of, AllocationModel.job_id)
            columns = (holder, AllocationModel.node_id, AllocationModel.device_id, AllocationModel.share,
                       AllocationModel.memory_mib, AllocationModel.cpu_cores, AllocationModel.host_memory_mib)
            query = (select(*columns).join(JobModel, JobModel.id == AllocationModel.job_id)
                     .where(among(AllocationModel.node_id, node_ids), AllocationModel.released_at.is_(None)))
            for row in session.execute(query):
                held.add(*row)
        for node in nodes:
            try:
                self._load_node(node, devices[node.id], held)
                self.set_aside.pop(node.id, None)
            except Exception as exc:  # noqa: BLE001 - one unreadable node must not stop the pool
                self.pool.remove_node(node.id)
                why = f"{exc.__class__.__name__}: {exc}"
                log.exception("node %s set aside: its rows cannot be read for placement", node.name)
                self.set_aside[node.id] = (node.name, why)

    def _load_node(self, node: NodeModel, rows: list[DeviceModel], held: "_Held") -> None:
        present = {row.id for row in rows}
        specs = [
            device_spec(row, id=row.id, parent_id=row.parent_id if row.parent_id in present else None, settings=self.settings)
            for row in rows
        ]
        if self.capacity_only:
            best = NodeSpec(node.id, node.name, float(node.cpu_cores), node.memory_total_mib, network=network_of(node))
            self.pool.upsert_node(best, specs)
            return
        states = {row.id: device_state(row, *held.device.get(row.id, (0.0, 0)), out_of_service(row)) for row in rows}
        cpu, memory = held.node.get(node.id, (0.0, 0))
        self.pool.upsert_node(node_spec(node), specs, states, cpu, memory)
        for holding in held.holdings(self.pool, node.id):
            self.pool.adopt(holding)


class _Held:
    """What the active allocations of the nodes being reloaded hold: summed per device and per
    node (what the pool's columns hold), and per job and node (the pool's ``holdings``, so the
    sharing planner can tell what a running job would give back)."""

    def __init__(self) -> None:
        self.device: dict[int, tuple[float, int]] = {}
        self.node: dict[int, tuple[float, int]] = {}
        self._jobs: dict[int, dict[int, list]] = {}  # node id -> job id -> [device ids, share, memory, cpu, host memory]

    def add(self, job_id: int, node_id: int, device_id: int | None, share: float | None, memory_mib: int | None,
            cpu_cores: float | None, host_memory_mib: int | None) -> None:
        job = self._jobs.setdefault(node_id, {}).setdefault(job_id, [[], 0.0, [], 0.0, 0])
        if device_id is None:
            cpu, memory = self.node.get(node_id, (0.0, 0))
            self.node[node_id] = (cpu + float(cpu_cores or 0.0), memory + int(host_memory_mib or 0))
            job[3] += float(cpu_cores or 0.0)
            job[4] += int(host_memory_mib or 0)
            return
        total_share, total_memory = self.device.get(device_id, (0.0, 0))
        self.device[device_id] = (total_share + float(share or 0.0), total_memory + int(memory_mib or 0))
        job[0].append(device_id)
        job[1] = float(share or 0.0)
        job[2].append(int(memory_mib or 0))

    def holdings(self, pool: ColumnarPool, node_id: int) -> list[Holding]:
        slot = pool.node_by_id[node_id]
        found = []
        for job_id, (device_ids, share, memory, cpu, host_memory) in self._jobs.get(node_id, {}).items():
            slots = [pool.device_by_id.get(device_id) for device_id in device_ids]
            kept = [(s, m) for s, m in zip(slots, memory) if s is not None]  # a device no longer present holds nothing here
            found.append(Holding(job_id, slot, tuple(s for s, _ in kept), share, tuple(m for _, m in kept), cpu, host_memory))
        return found
