"""The sharing policy: queues with entitlements, preemption, EASY backfill, wait-or-fall-back.

Pure (no store): ``Planner.plan(now_s, waiting, holders)`` decides one pass over the engine's
pool. See docs/queues.md.
"""

from poold.scheduler.sharing.model import (
    COST, Holder, PassPlan, Preemption, QueueEntitlement, Reservation, SharingOptions, Waiting,
)
from poold.scheduler.sharing.planner import Planner

__all__ = [
    "COST", "Holder", "PassPlan", "Planner", "Preemption", "QueueEntitlement", "Reservation", "SharingOptions", "Waiting",
]
