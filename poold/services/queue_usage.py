"""What each queue holds and what waits in it, from SQL: for ``poold queues`` and ``GET /api/v1/queues``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from poold.db.models import AllocationModel, DeviceModel, JobModel, QueueModel
from poold.scheduler.sharing.model import COST
from poold.services.jobs import ACTIVE_STATES
from poold.services.queues import list_queues

MIG_SLICES_PER_GPU = 7


def whole_devices(share: float, attributes: dict[str, Any] | None) -> float:
    """How much of a whole device an allocation holds: its share, times the slice's part of
    its GPU for a MIG slice (``mig_slices`` of 7), as prices count it."""
    slices = (attributes or {}).get("mig_slices")
    if isinstance(slices, int) and 0 < slices <= MIG_SLICES_PER_GPU:
        return share * slices / MIG_SLICES_PER_GPU
    return share


@dataclass
class QueueUsage:
    """One queue: its row (entitlement), what its placed jobs hold (whole devices by model and
    by kind, cost per hour), how many are placed and stopping, and what waits."""

    queue: QueueModel
    devices: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, float] = field(default_factory=dict)
    cost_per_hour: float = 0.0
    placed: int = 0
    stopping: int = 0
    pending: int = 0
    oldest_pending_at: datetime | None = None

    def amounts(self) -> dict[str, float]:
        """What it holds in the keys of a guarantee or limit (``poold.scheduler.sharing.model``):
        lower-cased models, kinds, and ``cost`` per hour."""
        held = {model.lower(): amount for model, amount in self.devices.items()}
        return {**held, **self.kinds, COST: self.cost_per_hour}


def queue_usage(session: Session) -> list[QueueUsage]:
    """Every queue, highest priority first, with what it holds and what waits in it."""
    usage = {queue.name: QueueUsage(queue) for queue in list_queues(session)}
    held = (JobModel.state.in_(ACTIVE_STATES), AllocationModel.released_at.is_(None))
    devices: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    rows = session.execute(
        select(JobModel.queue_name, DeviceModel.model, DeviceModel.kind, DeviceModel.attributes, AllocationModel.share)
        .join(AllocationModel, AllocationModel.job_id == JobModel.id)
        .join(DeviceModel, DeviceModel.id == AllocationModel.device_id)
        .where(*held)
    )
    for queue, model, kind, attributes, share in rows:
        devices[queue][model] += whole_devices(share, attributes)
        kinds[queue][kind] += whole_devices(share, attributes)
    costs = session.execute(
        select(JobModel.queue_name, func.sum(AllocationModel.price_per_hour))
        .join(AllocationModel, AllocationModel.job_id == JobModel.id)
        .where(*held)
        .group_by(JobModel.queue_name)
    )
    stopping = case((JobModel.preempt_requested_at.is_not(None), 1), else_=0)
    counts = session.execute(
        select(JobModel.queue_name, JobModel.state, func.count(), func.sum(stopping), func.min(JobModel.submitted_at))
        .where(JobModel.state.in_(("pending", *ACTIVE_STATES)))
        .group_by(JobModel.queue_name, JobModel.state)
    )
    for name, cost in costs:
        if name in usage:
            usage[name].cost_per_hour = float(cost or 0.0)
    for name, state, count, stopping_count, oldest in counts:
        if (entry := usage.get(name)) is None:
            continue
        if state == "pending":
            entry.pending, entry.oldest_pending_at = count, oldest
        else:
            entry.placed += count
            entry.stopping += int(stopping_count or 0)
    for name, models in devices.items():
        if name in usage:
            usage[name].devices = {model: round(amount, 6) for model, amount in sorted(models.items())}
            usage[name].kinds = {kind: round(amount, 6) for kind, amount in sorted(kinds[name].items())}
    return list(usage.values())
