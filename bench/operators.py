"""What the operators' view costs the daemon on a large pool.

    .venv/bin/python bench/operators.py [--nodes 5000] [--gpus-per-node 8] [--pending 10000] [--db URL] [--json]

The store of ``bench/placement.py scale`` (``nodes`` nodes of H100-like GPUs, about half held
by running jobs of mixed shapes, ``pending`` pending jobs), after one scheduling pass of the
daemon's own scheduler over it. Then each read path an operator's tools take is timed, the
median of ``--repeat`` runs, with nothing cached between them:

- ``metrics_scrape_s``: the store's part of ``/metrics`` (``PoolCollector.read``: devices by
  node and state, the pool by model, jobs and waits by queue, accrued cost, heartbeat ages)
  and the whole text exposition, ``metrics_bytes`` long;
- ``pool_overview_s``: ``GET /api/v1/pool`` (``poold pool``);
- ``fragmentation_s``: the leader's fragmentation by model, over its pool and job mix;
- ``usage_by_queue_s``: ``GET /api/v1/usage?by=queue`` over every allocation ever made
  (``poold usage``), and ``usage_running_s`` over the running jobs (the dashboard's cost so far).

The last line of stdout is one JSON object (``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.scale import _populate  # noqa: E402
from bench.store import throwaway_store  # noqa: E402
from poold.api.context import AppContext  # noqa: E402
from poold.db.session import make_sessionmaker  # noqa: E402
from poold.metrics_pool import PoolCollector  # noqa: E402
from poold.services import accounting, overview  # noqa: E402
from poold.settings import Settings  # noqa: E402


def _median_s(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict:
    with throwaway_store(args.db, "operators") as (engine, backend):
        _populate(engine, args.nodes, args.gpus_per_node, args.pending, seed=1)
        factory = make_sessionmaker(engine)
        settings = Settings(state_dir=Path("/nonexistent"), database_url=str(engine.url))
        settings.scheduler.max_jobs_per_pass = max(settings.scheduler.max_jobs_per_pass, args.pending)
        ctx = AppContext.build(settings, factory)
        placed = len(ctx.scheduler.run_pass().placed)
        collector = PoolCollector(ctx)
        metrics = ctx.metrics
        metrics.registry.register(collector)
        collector.cache_s = 0.0  # every scrape reads the store, as the first after each cache_s does

        def pool() -> None:
            with factory() as session:
                overview.pool_overview(session, settings, fragmentation=ctx.scheduler.fragmentation_by_model(), usage=ctx.reports)

        def usage(states: set[str] | None) -> None:
            with factory() as session:
                accounting.summarise(accounting.job_usage(session, states=states), "queue")

        exposition = metrics.exposition()
        with factory() as session:
            jobs = len(accounting.job_usage(session))
        figures = {
            "nodes": args.nodes, "devices": args.nodes * args.gpus_per_node, "db": backend, "jobs_with_allocations": jobs,
            "placed_by_the_pass": placed,
            "metrics_scrape_s": round(_median_s(metrics.exposition, args.repeat), 3),
            "metrics_bytes": len(exposition),
            "pool_overview_s": round(_median_s(pool, args.repeat), 3),
            "fragmentation_s": round(_median_s(ctx.scheduler.fragmentation_by_model, args.repeat), 3),
            "usage_by_queue_s": round(_median_s(lambda: usage(None), args.repeat), 3),
            "usage_running_s": round(_median_s(lambda: usage({"running", "assigned"}), args.repeat), 3),
        }
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--pending", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is shown)")
    parser.add_argument("--db", metavar="URL", help="a PostgreSQL server URL (a throwaway database is made there); default: SQLite")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args(argv)
    figures = run(args)
    print(f"the operators' view on {figures['db']}: {figures['nodes']} nodes, {figures['devices']} GPUs, "
          f"{figures['jobs_with_allocations']} jobs holding or having held devices")
    rows = [
        ("/metrics, store figures read and exposed", f"{figures['metrics_scrape_s']:.3f} s", f"{figures['metrics_bytes']:,} bytes"),
        ("GET /pool (poold pool)", f"{figures['pool_overview_s']:.3f} s", ""),
        ("fragmentation by model (leader)", f"{figures['fragmentation_s']:.3f} s", ""),
        ("GET /usage?by=queue, all time", f"{figures['usage_by_queue_s']:.3f} s", ""),
        ("GET /usage, running jobs", f"{figures['usage_running_s']:.3f} s", ""),
    ]
    for label, value, extra in rows:
        print(f"  {label:<42} {value:>9}  {extra}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
