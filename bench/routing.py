"""``bench/placement.py routing``: cost-per-work routing against heterogeneity-blind best fit.

A mixed pool of K80, P100 and V100 nodes (8 GPUs each), priced per GPU-hour at public cloud
list prices (``PRICES``). Jobs are drawn from Gavel's measured throughput table
(``../shared/traces/gavel/``): each job is one row (a model, batch size and GPU count) and
needs ``hours`` of work, counted in hours on its fastest chip, so a job of 1 hour runs 1 h
on its best chip and throughput-ratio longer on the others. Jobs arrive over simulated time
(Poisson), wait in order when nothing fits, and free their GPUs when they end.

- ``poold``: the daemon's engine; each job's accept list names every chip it runs on with
  its measured steps/s as speed, objective ``cost``; when the cheapest-per-work chips are
  busy the engine takes the next acceptable chip.
- ``bestfit_blind``: the tightest node with enough free GPUs, whatever the chip.

Work per cost = (sum of the jobs' hours of work) / (sum of what the GPUs they held cost).
"""

from __future__ import annotations

import csv
import heapq
import random
from dataclasses import dataclass
from pathlib import Path

from poold.jobspec import JobSpec
from poold.scheduler.engine import Engine, Unplaceable
from poold.scheduler.framework import EngineOptions
from poold.scheduler.mix import JobMix
from poold.scheduler.pool import ColumnarPool, DeviceSpec, NodeSpec
from poold.scheduler.request import PlacementRequest
from poold.scheduler.stack import build_stack

# USD per GPU-hour, on-demand list prices: K80 (AWS p2), P100 (GCP), V100 (AWS p3).
PRICES = {"K80": 0.90, "P100": 1.46, "V100": 3.06}
COLUMNS = {"K80": "k80_steps_per_s", "P100": "p100_steps_per_s", "V100": "v100_steps_per_s"}
GPUS_PER_NODE = 8
# How often jobs of each GPU count are drawn.
SCALE_WEIGHTS = {1: 0.70, 2: 0.15, 4: 0.10, 8: 0.05}


@dataclass(frozen=True)
class JobType:
    name: str
    gpus: int
    steps_per_s: dict[str, float]  # by chip; chips it cannot run on are left out


@dataclass(frozen=True)
class Job:
    id: int
    arrival_s: float
    kind: JobType
    hours: float  # of work, in hours on its fastest chip

    def runtime_s(self, model: str) -> float:
        fastest = max(self.kind.steps_per_s.values())
        return self.hours * 3600 * fastest / self.kind.steps_per_s[model]


@dataclass
class PolicyResult:
    policy: str
    work_hours: float
    cost: float
    mean_wait_s: float
    makespan_s: float
    by_model: dict[str, int]

    @property
    def work_per_cost(self) -> float:
        return self.work_hours / self.cost


def load_job_types(path: Path) -> list[JobType]:
    types = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                speeds = {model: float(row[column]) for model, column in COLUMNS.items()}
                gpus = int(row["scale_factor"])
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: {exc}") from exc
            speeds = {model: speed for model, speed in speeds.items() if speed > 0}
            if speeds and gpus in SCALE_WEIGHTS:
                types.append(JobType(f"{row['job_type']} x{gpus}", gpus, speeds))
    return types


def make_jobs(types: list[JobType], count: int, mean_gap_s: float, seed: int) -> list[Job]:
    rng = random.Random(seed)
    by_scale = {scale: [t for t in types if t.gpus == scale] for scale in SCALE_WEIGHTS}
    jobs, now = [], 0.0
    for job_id in range(1, count + 1):
        now += rng.expovariate(1.0 / mean_gap_s)
        scale = rng.choices(list(SCALE_WEIGHTS), list(SCALE_WEIGHTS.values()))[0]
        jobs.append(Job(job_id, now, rng.choice(by_scale[scale]), rng.uniform(0.25, 2.0)))
    return jobs


class _Cluster:
    """Free GPUs per node, for the blind baseline."""

    def __init__(self, nodes_per_model: int):
        self.nodes = [(model, GPUS_PER_NODE) for model in PRICES for _ in range(nodes_per_model)]
        self.free = [GPUS_PER_NODE] * len(self.nodes)


class BestFitBlind:
    """Best fit that sees GPU counts only: the node with the fewest free GPUs that fit the job,
    ties to the first in a seeded random order of the nodes (no chip is favoured)."""

    name = "bestfit_blind"

    def __init__(self, nodes_per_model: int, seed: int):
        self.cluster = _Cluster(nodes_per_model)
        order = list(range(len(self.cluster.nodes)))
        random.Random(seed).shuffle(order)
        self.rank = {node: rank for rank, node in enumerate(order)}
        self.held: dict[int, tuple[int, int]] = {}

    def place(self, job: Job) -> str | None:
        fits = [n for n, free in enumerate(self.cluster.free) if free >= job.kind.gpus and self.cluster.nodes[n][0] in job.kind.steps_per_s]
        if not fits:
            return None
        node = min(fits, key=lambda n: (self.cluster.free[n], self.rank[n]))
        self.cluster.free[node] -= job.kind.gpus
        self.held[job.id] = (node, job.kind.gpus)
        return self.cluster.nodes[node][0]

    def release(self, job: Job) -> None:
        node, gpus = self.held.pop(job.id)
        self.cluster.free[node] += gpus


class PooldRouting:
    name = "poold"

    def __init__(self, nodes_per_model: int, seed: int):
        self.pool = ColumnarPool()
        device_id = 0
        for n, (model, gpus) in enumerate(_Cluster(nodes_per_model).nodes):
            devices = []
            for index in range(gpus):
                device_id += 1
                devices.append(DeviceSpec(id=device_id, uuid=f"{model}-{n}-{index}", kind="gpu", model=model, index=index,
                                          price_per_hour=PRICES[model]))
            self.pool.upsert_node(NodeSpec(id=n, name=f"{model.lower()}-{n}", cpu_cores=64, memory_total_mib=512 * 1024), devices)
        self.mix = JobMix()
        self.engine = Engine(self.pool, build_stack(), EngineOptions(seed=seed), self.mix)
        self.requests: dict[int, PlacementRequest] = {}

    def request(self, job: Job) -> PlacementRequest:
        found = self.requests.get(job.id)
        if found is None:
            accept = [{"model": model, "speed": speed} for model, speed in job.kind.steps_per_s.items()]
            spec = JobSpec.model_validate({"name": "job", "command": ["true"], "resources": {"count": job.kind.gpus, "accept": accept}})
            found = self.requests[job.id] = PlacementRequest.from_spec(job.id, spec)
            self.mix.observe(found)
        return found

    def place(self, job: Job) -> str | None:
        decision = self.engine.place(self.request(job))
        if isinstance(decision, Unplaceable):
            return None
        [holding] = self.engine.apply(decision)  # one-node jobs: one holding
        return self.pool.model_name(holding.devices[0])

    def release(self, job: Job) -> None:
        self.pool.release(job.id)


def simulate(policy, jobs: list[Job]) -> PolicyResult:
    """Arrivals and completions in time order; at each, the waiting jobs are tried in order."""
    events: list[tuple[float, int, int]] = [(job.arrival_s, 1, job.id) for job in jobs]
    heapq.heapify(events)
    by_id = {job.id: job for job in jobs}
    waiting: list[Job] = []
    cost = waited = 0.0
    end = 0.0
    by_model: dict[str, int] = {}
    while events:
        now, kind, job_id = heapq.heappop(events)
        job = by_id[job_id]
        if kind == 0:
            policy.release(job)
        else:
            waiting.append(job)
        still = []
        for candidate in waiting:
            model = policy.place(candidate)
            if model is None:
                still.append(candidate)
                continue
            runtime = candidate.runtime_s(model)
            cost += PRICES[model] * candidate.kind.gpus * runtime / 3600
            waited += now - candidate.arrival_s
            by_model[model] = by_model.get(model, 0) + 1
            end = max(end, now + runtime)
            heapq.heappush(events, (now + runtime, 0, candidate.id))
        waiting = still
    if waiting:
        raise RuntimeError(f"{len(waiting)} jobs never fit the pool")
    return PolicyResult(policy.name, sum(job.hours for job in jobs), cost, waited / len(jobs), end, by_model)


def ideal_work_per_cost(jobs: list[Job]) -> float:
    """Every job on its cheapest-per-work chip, as if capacity never ran out (an upper bound)."""
    cost = sum(min(PRICES[m] * job.kind.gpus * job.runtime_s(m) / 3600 for m in job.kind.steps_per_s) for job in jobs)
    return sum(job.hours for job in jobs) / cost


def run_routing(gavel_csv: Path, jobs: int, nodes_per_model: int, mean_gap_s: float, seed: int) -> tuple[list[PolicyResult], float]:
    """Both policies over the same workload; returns their results and the ideal work per cost."""
    workload = make_jobs(load_job_types(gavel_csv), jobs, mean_gap_s, seed)
    results = [simulate(policy(nodes_per_model, seed), workload) for policy in (PooldRouting, BestFitBlind)]
    return results, ideal_work_per_cost(workload)
