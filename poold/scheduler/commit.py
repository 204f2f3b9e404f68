"""Committing a pass's placements: in batches, each one transaction that re-checks under lock
everything the placements hold, so two daemons (or a pass and a stale view) never over-commit.

Lock order, the same everywhere in poold: jobs, then nodes (by id), then devices (by id).
A batch

1. claims its jobs with ``SELECT … FOR UPDATE SKIP LOCKED`` (still pending, not being
   cancelled): a job another daemon is committing right now is skipped, not waited for;
2. locks the nodes, then the devices, it places on;
3. knows what active allocations hold on them (device share and memory, node CPU cores and
   host memory) and walks the placements in order, keeping each one only if the whole
   resource vector still fits: device share ≤ 1, device memory booked ≤ total and the memory
   the job needs free after what is booked and what runs outside poold (when counted), node
   CPU and host memory ≤ the node's; every device present, healthy, not quarantined, not
   being scrubbed. What is held is summed from the allocation rows, except on a node whose
   generation under lock is the one the pass read it at (``NodeHeld``): every change to what
   a node holds moves its generation in the same transaction, so the pass's own account of
   it is what the store holds, plus at most the pass's placements not committed yet (which
   fit with the batch by construction: the pass placed them together), and two queries a
   batch are saved;
4. writes allocation rows (one per device, one for the node's CPU and memory), the jobs'
   state and reason, the ``job.placed`` events (their ``data`` the placement's score
   breakdown, ``Placement.breakdown``, which ``poold why`` shows), and moves the nodes' generation.

A gang (:class:`GangProposal`) is kept whole or not at all: every part must fit in step 3,
else none of its parts is held. Its parts are written as job rows of their own (``gang_of``
the job as submitted, ``gang_rank``), each with its node and allocations; the job as
submitted turns ``assigned`` holding nothing itself (``poold.services.gangs``).

SQLite has no row locks: its write transaction (``BEGIN IMMEDIATE``) serialises batches instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from poold.db.ids import among
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
    # The score breakdown its ``job.placed`` event records (``Placement.breakdown``); None: none.
    breakdown: dict[str, Any] | None = None


@dataclass(frozen=True)
class GangProposal:
    """A gang's placement: one :class:`Proposal` per part, in rank order (each with the gang's
    ``job_id``; the parts' own rows are made when the gang is written)."""

    job_id: int
    parts: tuple[Proposal, ...]
    price_per_hour: float
    reason: str
    breakdown: dict[str, Any] | None = None


@dataclass(frozen=True)
class NodeHeld:
    """What the store holds on one node as the pass knows it, valid while the node's store
    generation is ``generation``: its CPU cores and host memory, and (share, memory MiB) on
    the devices a batch claims, by device id."""

    generation: int
    cpu_cores: float
    host_memory_mib: int
    devices: dict[int, tuple[float, int]]


@dataclass
class Committed:
    """What a batch wrote: the jobs placed, the ones that lost their race, and the generation
    each touched node moved to (``moved_from`` the one it had under lock, when this batch was
    the only change: a pool that saw that generation already holds the batch's placements)."""

    placed: list[int]
    lost: list[int]
    generations: dict[int, tuple[int, int]]  # node id -> (generation under lock, after)


def commit(factory: sessionmaker[Session], proposals: list[Proposal | GangProposal], count_outside_memory: bool = True,
           known: dict[int, NodeHeld] | None = None) -> Committed:
    """Write ``proposals`` in one transaction; a gang whole or not at all. ``known``: what
    the caller knows the store holds on some of the nodes, by node id (see the module docstring)."""
    if not proposals:
        return Committed([], [], {})
    with transaction(factory) as session:
        claimed = _claim(session, sorted(p.job_id for p in proposals))
        wanted = [p for p in proposals if p.job_id in claimed]
        nodes = _lock(session, _NODE_COLUMNS, {part.node_id for p in wanted for part in parts_of(p)})
        devices = _lock(session, _DEVICE_COLUMNS, {d.device_id for p in wanted for part in parts_of(p) for d in part.devices})
        ledger = _Ledger(session, nodes, devices, count_outside_memory, known or {})
        accepted = [p for p in wanted if ledger.take_all(parts_of(p))]
        generations = _write(session, [p for p in accepted if isinstance(p, Proposal)], nodes)
        for gang in (p for p in accepted if isinstance(p, GangProposal)):
            generations.update(write_gang(session, gang, nodes))
    committed = [p.job_id for p in accepted]
    kept = set(committed)
    lost = [p.job_id for p in proposals if p.job_id not in kept]
    if lost:
        log.info("placements of jobs %s lost a race (claimed elsewhere or resources taken); they will be tried again", lost)
    return Committed(committed, lost, generations)


def parts_of(proposal: Proposal | GangProposal) -> tuple[Proposal, ...]:
    return proposal.parts if isinstance(proposal, GangProposal) else (proposal,)


def _claim(session: Session, job_ids: list[int]) -> set[int]:
    query = (
        select(JobModel.id)
        .where(among(JobModel.id, job_ids), JobModel.state == "pending", JobModel.cancel_requested.is_(False))
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
    rows = session.execute(select(*columns).where(among(key, sorted(ids))).order_by(key).with_for_update())
    return {row.id: row for row in rows}


class _Ledger:
    """What is held on the locked nodes and devices, updated as placements are accepted."""

    def __init__(self, session: Session, nodes: dict[int, Row], devices: dict[int, Row], count_outside: bool,
                 known: dict[int, NodeHeld]):
        self.nodes, self.devices, self.count_outside = nodes, devices, count_outside
        self.share: dict[int, float] = {}
        self.memory: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.host_memory: dict[int, int] = {}
        current = {node_id: known[node_id] for node_id, row in nodes.items() if node_id in known and known[node_id].generation == row.generation}
        for node_id, held in current.items():
            self.cpu[node_id], self.host_memory[node_id] = held.cpu_cores, held.host_memory_mib
        unknown = []
        for device_id, row in devices.items():
            held = current.get(row.node_id)
            if held is not None and device_id in held.devices:
                self.share[device_id], self.memory[device_id] = held.devices[device_id]
            else:
                unknown.append(device_id)
        active = AllocationModel.released_at.is_(None)
        if unknown:
            for device_id, share, memory in session.execute(
                select(AllocationModel.device_id, func.sum(AllocationModel.share), func.sum(AllocationModel.memory_mib))
                .where(among(AllocationModel.device_id, sorted(unknown)), active)
                .group_by(AllocationModel.device_id)
            ):
                self.share[device_id], self.memory[device_id] = float(share or 0.0), int(memory or 0)
        unknown = sorted(set(nodes) - set(current))
        if unknown:
            for node_id, cpu, memory in session.execute(
                select(AllocationModel.node_id, func.sum(AllocationModel.cpu_cores), func.sum(AllocationModel.host_memory_mib))
                .where(among(AllocationModel.node_id, unknown), AllocationModel.device_id.is_(None), active)
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
        self._add(proposal, 1)
        return True

    def take_all(self, parts: tuple[Proposal, ...]) -> bool:
        """Hold every part, or (when one no longer fits) none of them."""
        taken: list[Proposal] = []
        for part in parts:
            if not self.take(part):
                for held in taken:
                    self._add(held, -1)
                return False
            taken.append(part)
        return True

    def _add(self, proposal: Proposal, sign: int) -> None:
        node_id = proposal.node_id
        self.cpu[node_id] = self.cpu.get(node_id, 0.0) + sign * proposal.cpu_cores
        self.host_memory[node_id] = self.host_memory.get(node_id, 0) + sign * proposal.host_memory_mib
        for claim in proposal.devices:
            self.share[claim.device_id] = self.share.get(claim.device_id, 0.0) + sign * claim.share
            self.memory[claim.device_id] = self.memory.get(claim.device_id, 0) + sign * claim.memory_mib


def allocation_rows(job_id: int, p: Proposal, now) -> list[dict]:
    """The allocation rows of one placement on one node: its CPU cores and host memory, then one per device."""
    rows = [{"job_id": job_id, "node_id": p.node_id, "device_id": None, "share": 0.0, "memory_mib": None,
             "cpu_cores": p.cpu_cores, "host_memory_mib": p.host_memory_mib, "price_per_hour": 0.0, "created_at": now}]
    rows.extend(
        {"job_id": job_id, "node_id": p.node_id, "device_id": d.device_id, "share": d.share, "memory_mib": d.memory_mib,
         "cpu_cores": 0.0, "host_memory_mib": 0, "price_per_hour": d.price_per_hour, "created_at": now}
        for d in p.devices
    )
    return rows


def move_generations(session: Session, node_ids: set[int], nodes: dict[int, Row]) -> dict[int, tuple[int, int]]:
    """Move the nodes' generation; node id -> (generation under lock, after)."""
    moved = session.execute(
        update(NodeModel).where(among(NodeModel.id, sorted(node_ids)))
        .values(generation=NodeModel.generation + 1).returning(NodeModel.id, NodeModel.generation)
    )
    return {node_id: (nodes[node_id].generation, generation) for node_id, generation in moved}


def _write(session: Session, accepted: list[Proposal], nodes: dict[int, Row]) -> dict[int, tuple[int, int]]:
    if not accepted:
        return {}
    now = utcnow()
    rows = [row for p in accepted for row in allocation_rows(p.job_id, p, now)]
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
        [{"at": now, "kind": "job.placed", "job_id": p.job_id, "node_id": p.node_id, "message": f"placed on {p.node_name}: {p.reason}",
          "data": p.breakdown or {}}
         for p in accepted],
    )
    return move_generations(session, {p.node_id for p in accepted}, nodes)



def write_gang(session: Session, gang: GangProposal, nodes: dict[int, Row]) -> dict[int, tuple[int, int]]:
    """Write an accepted gang: one job row per part (``gang_of`` the gang, ``gang_rank``, its
    node), their allocations and ``job.placed`` events, and the gang itself ``assigned``."""
    now = utcnow()
    parent = session.execute(
        select(JobModel.name, JobModel.queue_name, JobModel.priority, JobModel.spec, JobModel.owner, JobModel.attempt)
        .where(JobModel.id == gang.job_id)
    ).one()
    part_ids = session.execute(
        insert(JobModel).returning(JobModel.id, sort_by_parameter_order=True),
        [{"name": parent.name, "queue_name": parent.queue_name, "priority": parent.priority, "spec": parent.spec,
          "owner": parent.owner, "attempt": parent.attempt, "state": "assigned", "cancel_requested": False,
          "gang_of": gang.job_id, "gang_rank": rank, "node_id": part.node_id, "submitted_at": now, "placed_at": now,
          "price_per_hour": part.price_per_hour, "reason": f"rank {rank} of {len(gang.parts)} of gang job {gang.job_id}: {part.reason}"}
         for rank, part in enumerate(gang.parts)],
    ).scalars().all()
    session.execute(AllocationModel.__table__.insert(),
                    [row for part_id, part in zip(part_ids, gang.parts) for row in allocation_rows(part_id, part, now)])
    session.execute(
        update(JobModel).where(JobModel.id == gang.job_id)
        .values(state="assigned", node_id=None, placed_at=now, price_per_hour=gang.price_per_hour, reason=gang.reason)
    )
    where = ", ".join(f"job {part_id} (rank {rank}) on {part.node_name}" for rank, (part_id, part) in enumerate(zip(part_ids, gang.parts)))
    notes = [{"at": now, "kind": "job.placed", "job_id": gang.job_id, "node_id": None, "data": gang.breakdown or {},
              "message": f"placed as a gang of {len(gang.parts)} parts: {where}: {gang.reason}"}]
    notes += [{"at": now, "kind": "job.placed", "job_id": part_id, "node_id": part.node_id, "data": part.breakdown or {},
               "message": f"placed on {part.node_name} as rank {rank} of gang job {gang.job_id}"}
              for rank, (part_id, part) in enumerate(zip(part_ids, gang.parts))]
    session.execute(EventModel.__table__.insert(), notes)
    return move_generations(session, {part.node_id for part in gang.parts}, nodes)
