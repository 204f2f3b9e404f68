"""Placement benchmarks on public traces.

    .venv/bin/python bench/placement.py replay ../shared/traces/alibaba-openb/openb_pod_list_default.csv \
        [--nodes NODE_CSV] [--seeds 42-51] [--policy NAME]... [--json]

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

DEFAULT_NODES = REPO_ROOT.parent / "shared" / "traces" / "alibaba-openb" / "openb_node_list_gpu_node.csv"
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

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
