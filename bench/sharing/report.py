"""What the simulator measures, and how it prints it.

- Share against entitlement, per queue: over the time every queue is busy (at least
  ``BUSY_TASKS`` tasks wait, and what it holds plus what they ask, priced at the pool's mean
  price per GPU, is at least what it is entitled to: fair share has something to decide; a
  queue whose only waiting task is one 8-GPU task that needs a whole node is not busy, it
  waits for its reservation), the time-weighted mean of its share
  of the cost held, against the time-weighted mean of what it is entitled to of that cost
  (``entitled_costs``: guarantees, then weights, water-filled). The share error is
  |got - entitled| / entitled.
- Utilisation: GPUs held (a share counting its fraction) over the cluster's GPUs, over the
  time some job waits (when a better policy could have placed more).
- Waits: per task, the time from its arrival to its last start less the time it ran before
  a preemption; mean and p95 by GPUs asked for, and the longest.
- Checks: placements that asked for more than was free (must be 0), tasks started later than
  the reservation they held (+ one pass: starts happen on passes), tasks never placed.
- Guarantee recovery: the longest time a queue with a guarantee held less than it while it
  was busy (``BUSY_TASKS`` tasks waiting).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from poold.scheduler.engine import Placement
from poold.scheduler.pool import ColumnarPool
from poold.scheduler.sharing.entitlements import entitled_costs, guarantee_cost, price_per_key

from .workload import SimQueue


BUSY_TASKS = 5


@dataclass
class PolicyResult:
    policy: str
    utilisation: float
    shares: dict[str, tuple[float, float]]  # queue -> (got, entitled), fractions of the cost held
    max_share_error: float
    wait_mean_s: dict[str, float]
    wait_p95_s: dict[str, float]
    longest_wait_s: float
    preemptions: int
    late_heads: int
    over_capacity: int
    never_placed: int
    guarantee_recovery_max_s: float
    all_busy_s: float
    seconds: float

    def record(self) -> dict:
        return {
            "policy": self.policy,
            "utilisation": round(self.utilisation, 4),
            "max_share_error": round(self.max_share_error, 4),
            "shares": {q: {"got": round(g, 4), "entitled": round(e, 4)} for q, (g, e) in self.shares.items()},
            "wait_mean_s": {k: round(v, 1) for k, v in self.wait_mean_s.items()},
            "wait_p95_s": {k: round(v, 1) for k, v in self.wait_p95_s.items()},
            "longest_wait_s": round(self.longest_wait_s, 1),
            "preemptions": self.preemptions,
            "late_heads": self.late_heads,
            "over_capacity": self.over_capacity,
            "never_placed": self.never_placed,
            "guarantee_recovery_max_s": round(self.guarantee_recovery_max_s, 1),
        }


@dataclass
class Meter:
    pool: ColumnarPool
    queues: list[SimQueue]
    pass_s: float
    last_s: float = 0.0
    busy_s: float = 0.0
    held_gpu_s: float = 0.0
    all_busy_s: float = 0.0
    got: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    entitled: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    under_since: dict[str, float] = field(default_factory=dict)
    recovery_max_s: float = 0.0
    preemptions: int = 0
    late_heads: int = 0
    over_capacity: int = 0

    def __post_init__(self) -> None:
        pool = self.pool
        self.gpus = int(np.count_nonzero(pool.dev_alive[: pool.n_devices]))
        self.price_per_gpu = float(pool.dev_price[: pool.n_devices][pool.dev_alive[: pool.n_devices]].mean())
        prices = price_per_key(pool)
        self.guaranteed = {q.entitlement.name: guarantee_cost(q.entitlement, prices) for q in self.queues}

    def advance(self, now: float, jobs: Iterable) -> None:
        """Account the time since the last call with the state as it was (jobs as of then)."""
        dt, self.last_s = now - self.last_s, now
        jobs = list(jobs)
        holding = [j for j in jobs if j.state in ("running", "stopping")]
        waiting_queues = {j.queue for j in jobs if j.state == "waiting"}
        cost = defaultdict(float)
        for j in holding:
            cost[j.queue] += j.price
        if dt > 0 and waiting_queues:
            self.busy_s += dt
            self.held_gpu_s += dt * sum(j.timed.task.gpu_request for j in holding)
        names = [q.entitlement.name for q in self.queues]
        total = sum(cost.values())
        entitled = entitled_costs(total, [q.entitlement for q in self.queues], self.guaranteed) if total > 0 else {}
        asked, waiting = defaultdict(float), defaultdict(int)
        for j in jobs:
            if j.state == "waiting":
                asked[j.queue] += j.timed.task.gpu_request * self.price_per_gpu
                waiting[j.queue] += 1
        busy = total > 0 and all(cost[name] + asked[name] >= entitled[name] and waiting[name] >= BUSY_TASKS for name in names)
        if dt > 0 and total > 0 and busy:
            self.all_busy_s += dt
            for name in names:
                self.got[name] += dt * cost[name] / total
                self.entitled[name] += dt * entitled[name] / total

    def settle(self, now: float, jobs: Iterable) -> None:
        """After a pass: note when each queue with a guarantee went under it while busy, and
        for how long once it is back (or no longer busy)."""
        cost, waiting = defaultdict(float), defaultdict(int)
        for j in jobs:
            if j.state == "running":
                cost[j.queue] += j.price
            elif j.state == "waiting":
                waiting[j.queue] += 1
        for name, guaranteed in self.guaranteed.items():
            if cost[name] < guaranteed * (1 - 1e-6) and waiting[name] >= BUSY_TASKS:
                self.under_since.setdefault(name, now)
            elif name in self.under_since:
                self.recovery_max_s = max(self.recovery_max_s, now - self.under_since.pop(name))

    def check_capacity(self, placement: Placement) -> None:
        pool = self.pool
        for holding in placement.holdings:
            if any(pool.dev_free[d] + 1e-9 < holding.share for d in holding.devices) or \
                    pool.node_cpu[holding.node] - pool.node_cpu_held[holding.node] + 1e-9 < holding.cpu_cores:
                self.over_capacity += 1

    def started(self, job, now: float) -> None:
        if job.reserved_start is not None and now > job.reserved_start + self.pass_s + 1e-6:
            self.late_heads += 1

    def result(self, policy: str, jobs: Iterable, seconds: float) -> PolicyResult:
        jobs = list(jobs)
        done = [j for j in jobs if j.state in ("running", "stopping", "done")]
        waits: dict[str, list[float]] = defaultdict(list)
        for j in done:
            waits[j.timed.size].append(j.waited_s)
        shares = {}
        for q in self.queues:
            name = q.entitlement.name
            span = self.all_busy_s or 1.0
            shares[name] = (self.got[name] / span, self.entitled[name] / span)
        error = max((abs(g - e) / e for g, e in shares.values() if e > 0), default=0.0) if self.all_busy_s else 0.0
        sizes = sorted(waits, key=int)
        for name, since in self.under_since.items():
            self.recovery_max_s = max(self.recovery_max_s, self.last_s - since)
        return PolicyResult(
            policy=policy,
            utilisation=self.held_gpu_s / (self.busy_s * self.gpus) if self.busy_s else 0.0,
            shares=shares,
            max_share_error=error,
            wait_mean_s={k: float(np.mean(waits[k])) for k in sizes},
            wait_p95_s={k: float(np.percentile(waits[k], 95)) for k in sizes},
            longest_wait_s=max((j.waited_s for j in done), default=0.0),
            preemptions=self.preemptions,
            late_heads=self.late_heads,
            over_capacity=self.over_capacity,
            never_placed=len(jobs) - len(done),
            guarantee_recovery_max_s=self.recovery_max_s,
            all_busy_s=self.all_busy_s,
            seconds=seconds,
        )


def format_table(results: list[PolicyResult]) -> str:
    lines = []
    names = list(results[0].shares)
    header = f"{'policy':<12} {'util':>6} {'share err':>9} " + " ".join(f"{n[:14]:>14}" for n in names)
    lines.append(header + f" {'longest':>9} {'preempt':>7} {'late':>4} {'stuck':>5}")
    for r in results:
        cells = " ".join(f"{100 * r.shares[n][0]:5.1f}/{100 * r.shares[n][1]:5.1f} %".rjust(14) for n in names)
        lines.append(f"{r.policy:<12} {100 * r.utilisation:5.1f}% {100 * r.max_share_error:8.1f}% {cells} "
                     f"{r.longest_wait_s / 60:7.1f} m {r.preemptions:>7} {r.late_heads:>4} {r.never_placed:>5}")
    lines.append("")
    sizes = sorted({k for r in results for k in r.wait_p95_s}, key=int)
    lines.append(f"{'wait (min)':<12} " + " ".join(f"{s + ' GPU mean/p95':>18}" for s in sizes))
    for r in results:
        cells = " ".join(f"{r.wait_mean_s.get(s, 0) / 60:8.1f}/{r.wait_p95_s.get(s, 0) / 60:<8.1f}".rjust(18) for s in sizes)
        lines.append(f"{r.policy:<12} {cells}")
    return "\n".join(lines)
