"""Invariants of the store, checked in SQL: nothing is held beyond what a device or node has.

Used by tests, benchmarks and (later) the chaos run; each violation is a sentence naming the
device or node and the resource.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from poold.db.models import AllocationModel, DeviceModel, NodeModel
from poold.scheduler.pool import EPSILON


def over_capacity(session: Session) -> list[str]:
    """Every device whose active allocations hold more than all of it (share) or more memory
    than it has, and every node whose active allocations hold more CPU cores or host memory
    than it has."""
    active = AllocationModel.released_at.is_(None)
    found = []
    devices = session.execute(
        select(DeviceModel.uuid, NodeModel.name, func.sum(AllocationModel.share), func.sum(AllocationModel.memory_mib), DeviceModel.memory_total_mib)
        .join(DeviceModel, DeviceModel.id == AllocationModel.device_id)
        .join(NodeModel, NodeModel.id == DeviceModel.node_id)
        .where(active)
        .group_by(DeviceModel.id, DeviceModel.uuid, NodeModel.name, DeviceModel.memory_total_mib)
        .having(
            (func.sum(AllocationModel.share) > 1.0 + EPSILON)
            # NULL total (memory not reported) compares as unknown: never a violation.
            | (func.coalesce(func.sum(AllocationModel.memory_mib), 0) > DeviceModel.memory_total_mib)
        )
    ).all()
    for uuid, node, share, memory, total in devices:
        found.append(f"device {uuid} on {node}: share {share:g} held, memory {memory} of {total} MiB held")
    nodes = session.execute(
        select(NodeModel.name, func.sum(AllocationModel.cpu_cores), func.sum(AllocationModel.host_memory_mib), NodeModel.cpu_cores, NodeModel.memory_total_mib)
        .join(NodeModel, NodeModel.id == AllocationModel.node_id)
        .where(active, AllocationModel.device_id.is_(None))
        .group_by(NodeModel.id, NodeModel.name, NodeModel.cpu_cores, NodeModel.memory_total_mib)
        .having((func.sum(AllocationModel.cpu_cores) > NodeModel.cpu_cores + 1e-6) | (func.sum(AllocationModel.host_memory_mib) > NodeModel.memory_total_mib))
    ).all()
    for name, cpu, memory, cores, total in nodes:
        found.append(f"node {name}: {cpu:g} of {cores} CPU cores and {memory} of {total} MiB host memory held")
    return found
