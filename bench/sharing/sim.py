"""A discrete-event simulation of the daemon's passes over simulated time, through the real
engine and the real sharing planner (``poold.scheduler.sharing``).

Tasks arrive at their (compressed) arrival times; a pass runs on a grid of ``pass_s`` seconds
whenever something happened since the last one (an arrival, an end, a preempted job that
stopped), at the first grid point at or after it, as the daemon's periodic pass would see it.
A placed task runs its duration and ends; a preempted one stops ``grace_s`` after the pass
that chose it, loses its work and waits again (its age in its queue kept). The pool is the
engine's own; every placement is checked against what is free before it is applied.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

from bench.replay.poold_policy import PooldPolicy, job_file
from bench.replay.trace import NodeSpec
from poold.scheduler.request import PlacementRequest
from poold.scheduler.sharing import Holder, Planner, SharingOptions, Waiting
from poold.settings import Settings

from .report import Meter, PolicyResult
from .workload import PRICES, SimQueue, TimedTask, queue_of

POLICY_OPTIONS = {
    "poold": SharingOptions(explain=False),
    "no-backfill": SharingOptions(backfill=False, explain=False),
    "priority": SharingOptions(fair_share=False, preemption=False, backfill=False, explain=False),
}
ARRIVE, END, STOPPED = 0, 1, 2


@dataclass
class SimJob:
    id: int
    timed: TimedTask
    queue: str
    request: PlacementRequest
    state: str = "future"  # future (not arrived), waiting, running, stopping, done
    attempt: int = 0
    waiting_since: float = 0.0
    waited_s: float = 0.0
    started_s: float = 0.0
    price: float = 0.0
    preempted_for: int | None = None
    reserved_start: float | None = None
    restarts: int = 0


@dataclass
class Simulation:
    policy: str
    nodes: list[NodeSpec]
    tasks: list[TimedTask]
    queues: list[SimQueue]
    pass_s: float = 10.0
    grace_s: float = 30.0
    seed: int = 42
    jobs: dict[int, SimJob] = field(default_factory=dict)

    def run(self) -> PolicyResult:
        began = time.perf_counter()
        host = PooldPolicy(Settings(prices=PRICES))
        host.start(self.nodes, [t.task for t in self.tasks], self.seed)
        engine, pool = host.engine, host.pool
        options = POLICY_OPTIONS[self.policy]
        options = SharingOptions(**{**options.__dict__, "grace_s": self.grace_s})
        planner = Planner(engine, {q.entitlement.name: q.entitlement for q in self.queues}, options)
        meter = Meter(pool, self.queues, self.pass_s)
        events: list[tuple[float, int, int, int, int]] = []
        seq = 0
        for job_id, timed in enumerate(self.tasks, start=1):
            request = PlacementRequest.from_spec(job_id, job_file(timed.task))
            self.jobs[job_id] = SimJob(job_id, timed, queue_of(timed.task.name, self.queues), request)
            heapq.heappush(events, (timed.arrival_s, seq, ARRIVE, job_id, 0))
            seq += 1
        now = 0.0
        while events:
            now = max(now + self.pass_s, self.pass_s * math.ceil(events[0][0] / self.pass_s))
            while events and events[0][0] <= now:
                _, _, kind, job_id, attempt = heapq.heappop(events)
                job = self.jobs[job_id]
                if kind == ARRIVE:
                    host.mix.observe(job.request)
                    job.state, job.waiting_since = "waiting", now
                elif job.attempt == attempt and job.state in ("running", "stopping"):
                    pool.release(job_id)
                    if kind == END:
                        job.state = "done"
                    else:
                        job.state, job.waiting_since, job.preempted_for = "waiting", now, None
                        job.restarts += 1
            meter.advance(now, self.jobs.values())
            waiting = [self._waiting(j) for j in self.jobs.values() if j.state == "waiting"]
            holders = [self._holder(j) for j in self.jobs.values() if j.state in ("running", "stopping")]
            plan = planner.plan(now, waiting, holders)
            for placement in plan.placements:
                job = self.jobs[placement.request.job_id]
                meter.check_capacity(placement)
                engine.apply(placement)
                meter.started(job, now)
                job.reserved_start = None
                job.state, job.started_s, job.price, job.attempt = "running", now, placement.chosen.price_per_hour, job.attempt + 1
                job.waited_s += now - job.waiting_since
                heapq.heappush(events, (now + job.timed.duration_s, seq, END, job.id, job.attempt))
                seq += 1
            for preemption in plan.preemptions:
                victim = self.jobs[preemption.victim_job_id]
                victim.state, victim.preempted_for = "stopping", preemption.for_job_id
                meter.preemptions += 1
                heapq.heappush(events, (now + self.grace_s, seq, STOPPED, victim.id, victim.attempt))
                seq += 1
            meter.settle(now, self.jobs.values())
            for job in self.jobs.values():
                if job.state == "waiting":
                    reservation = plan.reservations.get(job.id)
                    job.reserved_start = reservation.start_s if reservation else None
        meter.advance(now, self.jobs.values())
        return meter.result(self.policy, self.jobs.values(), time.perf_counter() - began)

    def _waiting(self, job: SimJob) -> Waiting:
        return Waiting(job.id, job.queue, job.timed.priority, job.timed.arrival_s, job.request, job.timed.max_runtime_s, True)

    def _holder(self, job: SimJob) -> Holder:
        return Holder(job.id, job.queue, job.timed.priority, job.started_s, job.timed.max_runtime_s, True, job.price,
                      job.state == "stopping", job.preempted_for)
