"""Builders for the sharing planner's tests: a pool and engine, running jobs held on chosen
nodes, waiting jobs from job-file resources. Prices (settings fixture): H100 4.0, A100 2.2, L4 0.8."""

from __future__ import annotations

from poold.scheduler.engine import Engine
from poold.scheduler.pool import ColumnarPool, Holding
from poold.scheduler.request import PlacementRequest
from poold.scheduler.sharing import Holder, Planner, QueueEntitlement, SharingOptions, Waiting
from poold.scheduler.stack import build_stack
from tests.builders import job, make_pool


class Site:
    def __init__(self, settings, *builders, queues: list[QueueEntitlement] = (), **options):
        self.pool: ColumnarPool = make_pool(settings, *builders)
        self.engine = Engine(self.pool, build_stack())
        self.planner = Planner(self.engine, {q.name: q for q in queues}, SharingOptions(**options))
        self.holders: list[Holder] = []

    def node(self, name: str) -> int:
        return self.pool.node_name.index(name)

    def run(self, job_id: int, node: str, count: int, *, queue: str = "a", priority: int = 0, placed: float = 0.0,
            max_runtime: float | None = None, preemptible: bool = True, share: float = 1.0, stopping: bool = False,
            preempted_for: int | None = None) -> Holder:
        """Job ``job_id`` holds ``count`` devices (``share`` of each) on ``node``, the first that have it free."""
        slot = self.node(node)
        devices = tuple(d for d in self.pool.devices_of(slot) if self.pool.dev_free[d] >= share and self.pool.dev_profile[d] < 0)[:count]
        assert len(devices) == count, f"{node} has no {count} free devices"
        self.pool.apply(Holding(job_id, slot, devices, share, (0,) * count, 0.0, 0))
        price = float(sum(self.pool.dev_price[d] for d in devices)) * share
        holder = Holder(job_id, queue, priority, placed, max_runtime, preemptible, price, stopping, preempted_for)
        self.holders.append(holder)
        return holder

    def plan(self, now: float, *waiting: Waiting):
        return self.planner.plan(now, list(waiting), self.holders)

    def where(self, placement) -> tuple[str, int]:
        return self.pool.node_name[placement.chosen.node], len(placement.chosen.devices)


def wants(job_id: int, *, queue: str = "a", priority: int = 0, submitted: float = 0.0, max_runtime: float | None = None,
          preemptible: bool = True, **resources) -> Waiting:
    """A waiting job asking for ``resources`` (job-file keys), e.g. ``wants(1, count=2)``."""
    request = PlacementRequest.from_spec(job_id, job(**resources))
    return Waiting(job_id, queue, priority, submitted, request, max_runtime, preemptible)
