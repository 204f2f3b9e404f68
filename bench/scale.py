"""``bench/placement.py scale``: one scheduling pass of the daemon over a large, half-full pool.

The store gets ``nodes`` nodes of ``gpus_per_node`` H100-like GPUs (NVLink between all GPUs of
a node, two NUMA halves, 128 cores, 1 TiB), about half of the GPUs held by running jobs of
mixed shapes. Rows are written in bulk; that set-up is not timed. Then the daemon's own
:class:`~poold.scheduler.loop.Scheduler` loads the pool and runs a pass with nothing pending,
as a daemon that was running before the burst (timed apart: ``snapshot_load_seconds``).
``pending`` pending jobs of mixed shapes (whole GPUs, shares, gangs of 2, 4 and 8, CPU-only)
are then written to the store, as if just submitted, and the next pass is timed: read and
parse them, decide every one and commit the placements in batches. Afterwards the store is
checked: no device and no node over capacity.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from bench.store import throwaway_store
from poold.db.models import AllocationModel, DeviceModel, JobModel, NodeModel, QueueModel, utcnow
from poold.db.session import make_sessionmaker
from poold.jobspec import JobSpec
from poold.scheduler.loop import Scheduler
from poold.services import audit
from poold.settings import Settings

GPU_MEMORY_MIB = 81559
NODE_CORES = 128
NODE_MEMORY_MIB = 1024 * 1024
# Pending and running job shapes: (weight, resources).
SHAPES = [
    (40, {"count": 1, "cpu_cores": 8, "host_memory": "64GiB"}),
    (20, {"count": 1, "share": 0.5, "cpu_cores": 4, "host_memory": "16GiB"}),
    (10, {"count": 1, "share": 0.25, "cpu_cores": 2, "host_memory": "8GiB"}),
    (10, {"count": 2, "cpu_cores": 16, "host_memory": "128GiB"}),
    (6, {"count": 4, "cpu_cores": 32, "host_memory": "256GiB", "interconnect": "nvlink"}),
    (4, {"count": 8, "cpu_cores": 64, "host_memory": "512GiB"}),
    (10, {"kind": "cpu", "cpu_cores": 8, "host_memory": "32GiB"}),
]


@dataclass
class ScaleResult:
    nodes: int
    gpus: int
    pending: int
    placed: int
    lost: int
    load_seconds: float
    pass_seconds: float
    db: str
    over_capacity: int

    @property
    def placements_per_s(self) -> float:
        return self.placed / self.pass_seconds if self.pass_seconds > 0 else float("inf")

    def as_json(self) -> dict:
        return {
            "pass_seconds": round(self.pass_seconds, 3),
            "placed": self.placed,
            "placements_per_s": round(self.placements_per_s, 1),
            "db": self.db,
            "nodes": self.nodes,
            "gpus": self.gpus,
            "pending": self.pending,
            "lost_races": self.lost,
            "snapshot_load_seconds": round(self.load_seconds, 3),
            "over_capacity": self.over_capacity,
        }


def _spec(resources: dict, index: int) -> dict:
    return JobSpec.model_validate({"name": f"bench-{index}", "command": ["true"], "resources": resources}).model_dump(mode="json")


def _populate(engine, nodes: int, gpus_per_node: int, pending: int, seed: int) -> None:
    """Nodes, devices, running jobs holding about half the GPUs, and the pending jobs, in bulk."""
    rng = random.Random(seed)
    last_job = _populate_running(engine, nodes, gpus_per_node, rng)
    _populate_pending(engine, pending, rng, first_id=last_job + 1)


def _populate_running(engine, nodes: int, gpus_per_node: int, rng: random.Random) -> int:
    """Nodes, devices and running jobs holding about half the GPUs, in bulk; the last job id."""
    now = utcnow()
    weights = [w for w, _ in SHAPES]
    specs = [_spec(resources, i) for i, (_, resources) in enumerate(SHAPES)]
    with engine.begin() as connection:
        connection.execute(QueueModel.__table__.insert(), [{"name": "default", "priority": 0, "description": ""}])
        connection.execute(NodeModel.__table__.insert(), [
            {"id": n + 1, "name": f"node-{n:05d}", "hostname": f"node-{n:05d}", "state": "ready", "drained": False,
             "cpu_cores": NODE_CORES, "memory_total_mib": NODE_MEMORY_MIB, "host": {}, "agent_version": "bench",
             "registered_at": now, "last_heartbeat_at": now, "generation": 1}
            for n in range(nodes)
        ])
        devices = []
        for n in range(nodes):
            uuids = [f"GPU-{n:05d}-{g}" for g in range(gpus_per_node)]
            for g, device_uuid in enumerate(uuids):
                devices.append({
                    "id": n * gpus_per_node + g + 1, "node_id": n + 1, "uuid": device_uuid, "vendor": "nvidia", "kind": "gpu",
                    "model": "H100", "name": "NVIDIA H100 80GB HBM3", "index": g, "memory_total_mib": GPU_MEMORY_MIB,
                    "compute_capability": "9.0", "numa_node": g * 2 // gpus_per_node,
                    "health": "ok", "present": True, "updated_at": now,
                    "attributes": {"nvlink": {other: 18 for other in uuids if other != device_uuid}},
                })
        for start in range(0, len(devices), 5000):
            connection.execute(DeviceModel.__table__.insert(), devices[start : start + 5000])
        jobs, allocations = [], []
        job_id = 0
        # Running jobs: fill each node to about half its GPUs (and at most 60 % of its CPU and
        # memory), with the same shapes.
        for n in range(nodes):
            free = [1.0] * gpus_per_node
            cpu = memory = 0
            misses = 0
            while sum(free) > gpus_per_node / 2 and misses < 20:
                resources = specs[rng.choices(range(len(SHAPES)), weights)[0]]["resources"]
                count, share = resources["count"], resources["share"] or 1.0
                fitting = [g for g in range(gpus_per_node) if free[g] >= share - 1e-9][:count]
                if len(fitting) < count or cpu + resources["cpu_cores"] > 0.6 * NODE_CORES or memory + resources["host_memory"] > 0.6 * NODE_MEMORY_MIB:
                    misses += 1
                    continue
                job_id += 1
                jobs.append({"id": job_id, "name": f"running-{job_id}", "queue_name": "default", "priority": 0, "state": "running",
                             "spec": {**specs[0], "name": f"running-{job_id}", "resources": resources},
                             "node_id": n + 1, "cancel_requested": False, "submitted_at": now,
                             "placed_at": now, "started_at": now, "price_per_hour": 0.0})
                allocations.append({"job_id": job_id, "node_id": n + 1, "device_id": None, "share": 0.0, "memory_mib": None,
                                    "cpu_cores": resources["cpu_cores"], "host_memory_mib": resources["host_memory"],
                                    "price_per_hour": 0.0, "created_at": now})
                cpu += resources["cpu_cores"]
                memory += resources["host_memory"]
                for g in fitting:
                    free[g] -= share
                    allocations.append({"job_id": job_id, "node_id": n + 1, "device_id": n * gpus_per_node + g + 1, "share": share,
                                        "memory_mib": int(GPU_MEMORY_MIB * share), "cpu_cores": 0.0, "host_memory_mib": 0,
                                        "price_per_hour": 0.0, "created_at": now})
        for start in range(0, len(jobs), 5000):
            connection.execute(JobModel.__table__.insert(), jobs[start : start + 5000])
        for start in range(0, len(allocations), 5000):
            connection.execute(AllocationModel.__table__.insert(), allocations[start : start + 5000])
    return job_id


def _populate_pending(engine, pending: int, rng: random.Random, first_id: int) -> None:
    """``pending`` pending jobs of the mixed shapes, ids from ``first_id``, in bulk."""
    now = utcnow()
    weights = [w for w, _ in SHAPES]
    specs = [_spec(resources, i) for i, (_, resources) in enumerate(SHAPES)]
    waiting = []
    for job_id in range(first_id, first_id + pending):
        spec = specs[rng.choices(range(len(SHAPES)), weights)[0]]
        waiting.append({"id": job_id, "name": f"pending-{job_id}", "queue_name": "default", "priority": 0, "state": "pending",
                        "spec": spec, "cancel_requested": False, "submitted_at": now, "reason": "waiting for the scheduler"})
    with engine.begin() as connection:
        for start in range(0, len(waiting), 5000):
            connection.execute(JobModel.__table__.insert(), waiting[start : start + 5000])


def _violations(factory) -> list[str]:
    with factory() as session:
        return audit.over_capacity(session)


def run_scale(nodes: int, gpus_per_node: int, pending: int, db: str | None, seed: int = 1) -> ScaleResult:
    with throwaway_store(db, "scale") as (engine, backend):
        rng = random.Random(seed)
        last_job = _populate_running(engine, nodes, gpus_per_node, rng)
        factory = make_sessionmaker(engine)
        settings = Settings(state_dir=Path("/nonexistent"), database_url=str(engine.url))
        settings.scheduler.max_jobs_per_pass = max(settings.scheduler.max_jobs_per_pass, pending)
        scheduler = Scheduler(factory, settings, seed=seed)
        started = time.perf_counter()
        scheduler.run_pass()  # the daemon running before the burst: the pool and the jobs holding it loaded
        loaded = time.perf_counter() - started
        _populate_pending(engine, pending, rng, first_id=last_job + 1)
        started = time.perf_counter()
        result = scheduler.run_pass()
        elapsed = time.perf_counter() - started
        return ScaleResult(
            nodes=nodes, gpus=nodes * gpus_per_node, pending=pending, placed=len(result.placed), lost=len(result.lost_races),
            load_seconds=loaded, pass_seconds=elapsed, db=backend, over_capacity=len(_violations(factory)),
        )
