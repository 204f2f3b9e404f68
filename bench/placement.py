"""Placement benchmarks on public traces.

    .venv/bin/python bench/placement.py replay ../shared/traces/alibaba-openb/openb_pod_list_default.csv \
        [--nodes NODE_CSV] [--seeds 42-51] [--policy NAME]... [--json]

    .venv/bin/python bench/placement.py simulate ../shared/traces/alibaba-openb/openb_pod_list_default.csv \
        [--queues QUEUES.toml] [--policy poold|no-backfill|priority]... [--json]

`simulate` replays tasks over simulated time through the engine and the sharing planner (queues,
preemption, backfill) and prints per queue the share it got against its entitlement, utilisation,
waits and preemptions, for each policy (bench/sharing/).

`replay` runs the FGD paper's protocol (see ../shared/traces/README.md) for each policy and seed and
prints the unallocated GPU % when arrived GPU first reaches 100 % and 130 % of the cluster; with
--json, the last line of stdout is one JSON object with the same numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.replay import POLICIES, TraceError, cluster_gpus, load_nodes, load_tasks, run  # noqa: E402
from bench.replay.report import PolicySummary, format_table, replay_record  # noqa: E402
from bench.sharing.sim import POLICY_OPTIONS  # noqa: E402

DEFAULT_NODES = REPO_ROOT.parent / "shared" / "traces" / "alibaba-openb" / "openb_node_list_gpu_node.csv"
DEFAULT_GAVEL = REPO_ROOT.parent / "shared" / "traces" / "gavel" / "gavel_isolated_throughput_matrix.csv"
DEFAULT_SEEDS = "42-51"


def parse_seeds(text: str) -> list[int]:
    """'42-51' -> 42..51; '42,45' -> [42, 45]; '7' -> [7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            low, high = int(first), int(last or first)
            if high < low:
                raise ValueError
            seeds.extend(range(low, high + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 42-51 or 42,45, got {text!r}") from None
    return seeds


def replay_command(args: argparse.Namespace) -> int:
    for module in args.policy_module:
        importlib.import_module(module)  # a module that calls bench.replay.register(...)
    names = args.policy or list(POLICIES)
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        print(f"error: unknown policy {', '.join(unknown)}; registered: {', '.join(POLICIES)}", file=sys.stderr)
        return 2
    try:
        nodes = load_nodes(args.nodes)
        trace = load_tasks(args.pod_csv)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summaries = []
    for name in names:
        results = []
        for seed in args.seeds:
            result = run(POLICIES[name](), nodes, trace, seed)
            results.append(result)
            print(f"{name} seed {seed}: {result.placed}/{result.decisions} placed in {result.seconds:.1f} s",
                  file=sys.stderr)
        summaries.append(PolicySummary(name, tuple(results)))
    gpus = cluster_gpus(nodes)
    print(f"{Path(args.pod_csv).name} on {len(nodes)} nodes, {gpus} GPUs, seeds {args.seeds[0]}..{args.seeds[-1]}")
    print("unallocated GPU % when arrived GPU first reaches 100 % / 130 % of the cluster")
    print(format_table(summaries))
    if args.json:
        print(json.dumps(replay_record(Path(args.pod_csv).name, gpus, summaries)))
    return 0


def scale_command(args: argparse.Namespace) -> int:
    from bench.scale import run_scale

    result = run_scale(args.nodes, args.gpus_per_node, args.pending, args.db)
    figures = result.as_json()
    print(f"one scheduling pass on {result.db}: {result.nodes} nodes, {result.gpus} GPUs about half held, {result.pending} jobs just submitted")
    rows = [
        ("daemon start: pool loaded, one pass with nothing pending", f"{result.load_seconds:.2f} s"),
        ("pass: decide and commit", f"{result.pass_seconds:.2f} s"),
        ("placed", f"{result.placed}"),
        ("placements per second", f"{result.placements_per_s:,.0f}"),
        ("lost races", f"{result.lost}"),
        ("devices or nodes over capacity (SQL)", f"{result.over_capacity}"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value:>12}")
    if args.json:
        print(json.dumps(figures))
    return 0 if result.over_capacity == 0 else 1


def routing_command(args: argparse.Namespace) -> int:
    import statistics

    from bench.routing import PRICES, run_routing

    print(f"{args.jobs} Gavel jobs per seed over {args.nodes_per_model} nodes x 8 GPUs of each of {', '.join(PRICES)} "
          f"(per GPU-hour: {', '.join(f'{m} {p:.2f}' for m, p in PRICES.items())}), one arrival every {args.mean_gap:g} s on average")
    print(f"{'seed':>4} {'policy':<14} {'work per cost':>14} {'cost':>10} {'mean wait':>10} {'makespan':>10}  jobs by chip")
    per_policy: dict[str, list[float]] = {}
    ratios = []
    for seed in args.seeds:
        results, ideal = run_routing(Path(args.gavel), args.jobs, args.nodes_per_model, args.mean_gap, seed)
        for r in results:
            chips = ", ".join(f"{model} {count}" for model, count in sorted(r.by_model.items()))
            print(f"{seed:>4} {r.policy:<14} {r.work_per_cost:>14.3f} {r.cost:>10.0f} {r.mean_wait_s / 60:>8.1f} m "
                  f"{r.makespan_s / 3600:>8.1f} h  {chips}")
            per_policy.setdefault(r.policy, []).append(r.work_per_cost)
        print(f"{seed:>4} {'(ideal)':<14} {ideal:>14.3f}   every job on its cheapest-per-work chip, capacity unlimited")
        ratios.append(results[0].work_per_cost / results[1].work_per_cost)
    medians = {policy: round(statistics.median(values), 4) for policy, values in per_policy.items()}
    ratio = statistics.median(ratios)
    print(f"median over seeds {args.seeds[0]}..{args.seeds[-1]}: cost-per-work routing delivers {ratio:.2f}x the work "
          f"per unit of cost of heterogeneity-blind best fit (per seed: {', '.join(f'{r:.2f}' for r in ratios)})")
    if args.json:
        print(json.dumps({"work_per_cost": medians, "ratio": round(ratio, 3)}))
    return 0


def simulate_command(args: argparse.Namespace) -> int:
    from bench.sharing import Simulation, compress, default_queues, format_table, load_queues, load_timed_tasks, pick_nodes
    from bench.sharing.workload import PRICES

    names = args.policy or list(POLICY_OPTIONS)
    try:
        nodes = pick_nodes(load_nodes(args.nodes), args.gpus)
        tasks = load_timed_tasks(args.pod_csv, args.limit, args.max_duration)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpus = cluster_gpus(nodes)
    tasks, factor = compress(tasks, gpus, args.load)
    cost = sum(node.gpus * PRICES.get(node.model, 1.0) for node in nodes)
    queues = load_queues(args.queues) if args.queues else default_queues(cost)
    results = []
    for name in names:
        result = Simulation(name, nodes, tasks, queues, pass_s=args.pass_s, grace_s=args.grace).run()
        print(f"{name}: simulated in {result.seconds:.1f} s", file=sys.stderr)
        results.append(result)
    span_h = tasks[-1].arrival_s / 3600
    print(f"{len(tasks)} GPU tasks of {Path(args.pod_csv).name} (durations trimmed to {args.max_duration / 3600:g} h), "
          f"arrivals over {span_h:.1f} h (gaps / {factor:.1f}, offered load {args.load:g}); {len(nodes)} nodes, {gpus} GPUs, "
          f"{cost:.1f} per hour; passes every {args.pass_s:g} s, grace {args.grace:g} s")
    for q in queues:
        e = q.entitlement
        print(f"  queue {e.name}: weight {e.weight:g}, guarantee {e.guarantee or '-'}, limit {e.limit or '-'}, {100 * q.share / sum(x.share for x in queues):.0f} % of tasks")
    print(f"share of the cost held, got/entitled, while every queue has 5 tasks waiting that ask at least its entitlement "
          f"({results[0].all_busy_s / 3600:.1f} h for {results[0].policy})")
    print(format_table(results))
    if args.json:
        print(json.dumps({"policies": [r.record() for r in results]}))
    bad = sum(r.over_capacity for r in results)
    return 0 if bad == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand is declared here."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser("replay", help="replay a pod trace with the FGD paper's protocol")
    replay.add_argument("pod_csv", help="pod list CSV (openb format)")
    replay.add_argument("--nodes", default=str(DEFAULT_NODES),
                        help="node list CSV (default: the openb GPU nodes, ../shared/traces beside the repository)")
    replay.add_argument("--seeds", type=parse_seeds, default=parse_seeds(DEFAULT_SEEDS),
                        help=f"seeds, e.g. 42-51 or 42,45 (default {DEFAULT_SEEDS})")
    replay.add_argument("--policy", action="append", default=[],
                        help="policy to run, repeatable (default: every registered policy)")
    replay.add_argument("--policy-module", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, so that it can register more policies")
    replay.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    replay.set_defaults(handler=replay_command)

    scale = commands.add_parser("scale", help="the pass a running daemon makes when a burst of jobs arrives, over a large half-full pool")
    scale.add_argument("--nodes", type=int, default=5000)
    scale.add_argument("--gpus-per-node", type=int, default=8)
    scale.add_argument("--pending", type=int, default=10000)
    scale.add_argument("--db", default=None, metavar="URL",
                       help="a PostgreSQL server URL (a throwaway database is made there); default: SQLite in a temporary file")
    scale.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    scale.set_defaults(handler=scale_command)

    routing = commands.add_parser("routing", help="cost-per-work routing on a mixed pool, jobs from Gavel's throughput table")
    routing.add_argument("--gavel", default=str(DEFAULT_GAVEL), help="Gavel's throughput CSV (default: ../shared/traces/gavel)")
    routing.add_argument("--jobs", type=int, default=1000, help="jobs per seed")
    routing.add_argument("--nodes-per-model", type=int, default=6, help="nodes of 8 GPUs per chip model")
    routing.add_argument("--mean-gap", type=float, default=300.0, help="mean seconds between arrivals")
    routing.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1-5"), help="seeds, e.g. 1-5 (default)")
    routing.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    routing.set_defaults(handler=routing_command)

    simulate = commands.add_parser("simulate", help="queues, preemption and backfill over simulated time (bench/sharing)")
    simulate.add_argument("pod_csv", help="pod list CSV (openb format, with creation_time and deletion_time)")
    simulate.add_argument("--nodes", default=str(DEFAULT_NODES), help="node list CSV (default: the openb GPU nodes)")
    simulate.add_argument("--queues", default=None, metavar="QUEUES.toml",
                          help="[queues.NAME] tables: weight, priority, guarantee, limit, share (default: prod, research, batch)")
    simulate.add_argument("--policy", action="append", default=[], choices=list(POLICY_OPTIONS),
                          help="repeatable (default: all, poold first)")
    simulate.add_argument("--limit", type=int, default=1200, help="the first N GPU tasks by arrival (default 1200)")
    simulate.add_argument("--gpus", type=int, default=64, help="cluster size: nodes of each model in turn up to this many GPUs")
    simulate.add_argument("--load", type=float, default=1.3, help="GPU-seconds asked / cluster GPU-seconds over the arrivals")
    simulate.add_argument("--max-duration", type=float, default=4 * 3600.0, help="durations trimmed to this (seconds)")
    simulate.add_argument("--pass-s", type=float, default=10.0, help="seconds between passes")
    simulate.add_argument("--grace", type=float, default=30.0, help="seconds a preempted task takes to stop")
    simulate.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    simulate.set_defaults(handler=simulate_command)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
