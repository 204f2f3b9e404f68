"""Placement throughput of the first-version engine, and of a full pass over the store.

Prints decisions per second for single-GPU and 4-GPU jobs over a synthetic pool of mixed
nodes (8x H100 NVLink, 4x A100 NVLink, 2x L4), in memory, and the placements committed per
second by a scheduling pass over SQLite.

    .venv/bin/python bench/bench_placement.py [--nodes 500] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from agents.record import DeviceRecord, HostRecord
from poold.db.models import Base
from poold.db.session import make_engine, make_sessionmaker, transaction
from poold.jobspec import JobSpec
from poold.scheduler.engine import Placement, place
from poold.scheduler.framework import PlacementRequest
from poold.scheduler.loop import apply_to_view, build_view, run_pass
from poold.scheduler.stack import build_stack
from poold.services import jobs, nodes
from poold.services.queues import sync_queues
from poold.settings import Settings

SHAPES = [("H100", 8, 81559, 18), ("A100", 4, 81920, 12), ("L4", 2, 23034, 0)]


def node_records(i: int) -> tuple[str, HostRecord, list[DeviceRecord]]:
    model, count, memory, links = SHAPES[i % len(SHAPES)]
    name = f"node-{i:05d}"
    devices = [
        DeviceRecord(uuid=f"GPU-{name}-{g}", vendor="nvidia", kind="gpu", model=model, index=g, memory_total_mib=memory,
                     compute_capability="9.0", numa_node=0 if g < count // 2 else 1)
        for g in range(count)
    ]
    if links:
        for device in devices:
            device.attributes["nvlink"] = {other.uuid: links for other in devices if other is not device}
    return name, HostRecord(hostname=name, cpu_cores=128, memory_total_mib=1024 * 1024), devices


def spec(count: int) -> JobSpec:
    accept = [{"model": "H100", "speed": 2.5}, {"model": "A100", "speed": 1.0}, {"model": "L4", "speed": 0.4}]
    return JobSpec.model_validate({"name": "b", "command": ["true"], "resources": {"count": count, "accept": accept}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    settings = Settings(state_dir=Path(tempfile.mkdtemp()), prices={"H100": 4.0, "A100": 2.2, "L4": 0.8})
    engine = make_engine(f"sqlite:///{settings.state_dir / 'bench.db'}")
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        sync_queues(session, settings)
        for i in range(args.nodes):
            nodes.register(session, *node_records(i), "bench")
    with factory() as session:
        view = build_view(session, settings)
    gpus = sum(len(n.devices) for n in view.nodes)
    stack = build_stack()
    print(f"pool: {args.nodes} nodes, {gpus} GPUs")
    for count in (1, 4):
        latencies = []
        placed = 0
        for j in range(args.jobs):
            request = PlacementRequest.from_spec(j, spec(count))
            started = time.perf_counter()
            decision = place(request, view, stack)
            latencies.append(time.perf_counter() - started)
            if isinstance(decision, Placement):
                apply_to_view(decision)
                placed += 1
        total = sum(latencies)
        print(f"in memory, {count}-GPU jobs: {len(latencies) / total:8.0f} decisions/s  "
              f"median {statistics.median(latencies) * 1e3:.2f} ms  p95 {sorted(latencies)[int(0.95 * len(latencies))] * 1e3:.2f} ms  ({placed} placed)")
    with transaction(factory) as session:
        for _ in range(args.jobs):
            jobs.submit(session, spec(1))
    started = time.perf_counter()
    result = run_pass(factory, settings, stack)
    elapsed = time.perf_counter() - started
    print(f"one pass over SQLite, 1-GPU jobs: {len(result.placed)} placed in {elapsed:.2f} s = {len(result.placed) / elapsed:.0f} placements/s committed")


if __name__ == "__main__":
    main()
