"""Committing a pass's placements: in batches, each one transaction that re-checks under lock
everything the placements hold, so two daemons (or a pass and a stale view) never over-commit.

Lock order, the same everywhere in poold: jobs, then nodes (by id), then devices (by id).
A batch

1. claims its jobs with ``SELECT … FOR UPDATE SKIP LOCKED`` (still pending, not being
   cancelled): a job another daemon is committing right now is skipped, not waited for;
2. locks the nodes, then the devices, it places on;
3. sums what active allocations hold on them (device share and memory, node CPU cores and
   host memory) and walks the placements in order, keeping each one only if the whole
   resource vector still fits: device share ≤ 1, device memory booked ≤ total and the memory
   the job needs free after what is booked and what runs outside poold (when counted), node
   CPU and host memory ≤ the node's; every device present, healthy, not quarantined, not being scrubbed;
4. writes allocation rows (one per device, one for the node's CPU and memory), the jobs'
   state and reason, the ``job.placed`` events, and moves the nodes' generation.

SQLite has no row locks: its write transaction (``BEGIN IMMEDIATE``) serialises batches instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from poold.db.models import AllocationModel, DeviceModel, EventModel, JobModel, NodeModel, in_service, utcnow
from poold.db.session import transaction
from poold.scheduler.pool import EPSILON

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceClaim:
    """A share of one device, the memory booked for it, and the memory that must be free for it
    (``PlacementRequest.memory_needed``)."""

    device_id: int
    share: float
    memory_mib: int
    memory_needed_mib: int
    price_per_hour: float


@dataclass(frozen=True)
class Proposal:
    """One placement as the store records it (store ids, not pool slots)."""

    job_id: int
    node_id: int
    node_name: str
    devices: tuple[DeviceClaim, ...]
    cpu_cores: float
    host_memory_mib: int
    price_per_hour: float
    reason: str


@dataclass
class Committed:
    """What a batch wrote: the jobs placed, the ones that lost their race, and the generation
    each touched node moved to (``moved_from`` the one it had under lock, when this batch was
    the only change: a pool that saw that generation already holds the batch's placements)."""

    placed: list[int]
    lost: list[int]
    generations: dict[int, tuple[int, int]]  # node id -> (generation under lock, after)


def commit(factory: sessionmaker[Session], proposals: list[Proposal], count_outside_memory: bool = True) -> Committed:
    """Write ``proposals`` in one transaction."""
    if not proposals:
        return Committed([], [], {})
    with transaction(factory) as session:
        claimed = _claim(session, sorted(p.job_id for p in proposals))
        wanted = [p for p in proposals if p.job_id in claimed]
        nodes = _lock(session, _NODE_COLUMNS, {p.node_id for p in wanted})
        devices = _lock(session, _DEVICE_COLUMNS, {d.device_id for p in wanted for d in p.devices})
        ledger = _Ledger(session, nodes, devices, count_outside_memory)
        accepted = [p for p in wanted if ledger.take(p)]
        generations = _write(session, accepted, nodes)
    committed = [p.job_id for p in accepted]
    kept = set(committed)
    lost = [p.job_id for p in proposals if p.job_id not in kept]
    if lost:
        log.info("placements of jobs %s lost a race (claimed elsewhere or resources taken); they will be tried again", lost)
    return Committed(committed, lost, generations)


def _claim(session: Session, job_ids: list[int]) -> set[int]:
    query = (
        select(JobModel.id)
        .where(JobModel.id.in_(job_ids), JobModel.state == "pending", JobModel.cancel_requested.is_(False))
        .order_by(JobModel.id)
        .with_for_update(skip_locked=True)
    )
    return set(session.scalars(query))


# What the ledger reads of the rows it locks: plain rows, not ORM objects (a batch locks
# hundreds of nodes and thousands of devices).
_NODE_COLUMNS = (NodeModel.id, NodeModel.state, NodeModel.drained, NodeModel.cpu_cores, NodeModel.memory_total_mib, NodeModel.generation)
_DEVICE_COLUMNS = (
    DeviceModel.id, DeviceModel.node_id, DeviceModel.present, DeviceModel.health, DeviceModel.quarantined_at,
    DeviceModel.scrubbing_since, DeviceModel.memory_total_mib, DeviceModel.memory_outside_mib,
)


def _lock(session: Session, columns: tuple, ids: set[int]) -> dict:
    if not ids:
        return {}
    key = columns[0]
    rows = session.execute(select(*columns).where(key.in_(sorted(ids))).order_by(key).with_for_update())
    return {row.id: row for row in rows}


class _Ledger:
    """What is held on the locked nodes and devices, updated as placements are accepted."""

    def __init__(self, session: Session, nodes: dict[int, Row], devices: dict[int, Row], count_outside: bool):
        self.nodes, self.devices, self.count_outside = nodes, devices, count_outside
        active = AllocationModel.released_at.is_(None)
        self.share: dict[int, float] = {}
        self.memory: dict[int, int] = {}
        if devices:
            for device_id, share, memory in session.execute(
                select(AllocationModel.device_id, func.sum(AllocationModel.share), func.sum(AllocationModel.memory_mib))
                .where(AllocationModel.device_id.in_(sorted(devices)), active)
                .group_by(AllocationModel.device_id)
            ):
                self.share[device_id], self.memory[device_id] = float(share or 0.0), int(memory or 0)
        self.cpu: dict[int, float] = {}
        self.host_memory: dict[int, int] = {}
        if nodes:
            for node_id, cpu, memory in session.execute(
                select(AllocationModel.node_id, func.sum(AllocationModel.cpu_cores), func.sum(AllocationModel.host_memory_mib))
                .where(AllocationModel.node_id.in_(sorted(nodes)), AllocationModel.device_id.is_(None), active)
                .group_by(AllocationModel.node_id)
            ):
                self.cpu[node_id], self.host_memory[node_id] = float(cpu or 0.0), int(memory or 0)

    def take(self, proposal: Proposal) -> bool:
        """Hold ``proposal`` if every resource it needs is still there; False leaves nothing held."""
        node = self.nodes.get(proposal.node_id)
        if node is None or node.state != "ready" or node.drained:
            return False
        if self.cpu.get(node.id, 0.0) + proposal.cpu_cores > node.cpu_cores + 1e-9:
            return False
        if self.host_memory.get(node.id, 0) + proposal.host_memory_mib > node.memory_total_mib:
            return False
        for claim in proposal.devices:
            device = self.devices.get(claim.device_id)
            if device is None or device.node_id != node.id or not device.present:
                return False
            if not in_service(device.health, device.quarantined_at, device.scrubbing_since):
                return False
            if self.share.get(device.id, 0.0) + claim.share > 1.0 + EPSILON:
                return False
            if device.memory_total_mib is not None:
                held = self.memory.get(device.id, 0)
                outside = (device.memory_outside_mib or 0) if self.count_outside else 0
                if held + claim.memory_mib > device.memory_total_mib or held + claim.memory_needed_mib + outside > device.memory_total_mib:
                    return False
        self.cpu[node.id] = self.cpu.get(node.id, 0.0) + proposal.cpu_cores
        self.host_memory[node.id] = self.host_memory.get(node.id, 0) + proposal.host_memory_mib
        for claim in proposal.devices:
            self.share[claim.device_id] = self.share.get(claim.device_id, 0.0) + claim.share
            self.memory[claim.device_id] = self.memory.get(claim.device_id, 0) + claim.memory_mib
        return True


def _write(session: Session, accepted: list[Proposal], nodes: dict[int, Row]) -> dict[int, tuple[int, int]]:
    if not accepted:
        return {}
    now = utcnow()
    rows = []
    for p in accepted:
        rows.append({"job_id": p.job_id, "node_id": p.node_id, "device_id": None, "share": 0.0, "memory_mib": None,
                     "cpu_cores": p.cpu_cores, "host_memory_mib": p.host_memory_mib, "price_per_hour": 0.0, "created_at": now})
        rows.extend(
            {"job_id": p.job_id, "node_id": p.node_id, "device_id": d.device_id, "share": d.share, "memory_mib": d.memory_mib,
             "cpu_cores": 0.0, "host_memory_mib": 0, "price_per_hour": d.price_per_hour, "created_at": now}
            for d in p.devices
        )
    session.execute(AllocationModel.__table__.insert(), rows)
    jobs = JobModel.__table__
    session.execute(
        update(jobs).where(jobs.c.id == bindparam("job_id")).values(
            state="assigned", node_id=bindparam("node_id"), placed_at=now, price_per_hour=bindparam("price"), reason=bindparam("reason")
        ),
        [{"job_id": p.job_id, "node_id": p.node_id, "price": p.price_per_hour, "reason": p.reason} for p in accepted],
    )
    session.execute(
        EventModel.__table__.insert(),
        [{"at": now, "kind": "job.placed", "job_id": p.job_id, "node_id": p.node_id, "message": f"placed on {p.node_name}: {p.reason}", "data": {}}
         for p in accepted],
    )
    moved = session.execute(
        update(NodeModel).where(NodeModel.id.in_(sorted({p.node_id for p in accepted})))
        .values(generation=NodeModel.generation + 1).returning(NodeModel.id, NodeModel.generation)
    )
    return {node_id: (nodes[node_id].generation, generation) for node_id, generation in moved}
