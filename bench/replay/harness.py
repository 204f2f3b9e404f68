"""Replay of the FGD paper's protocol against a placement policy, with an independent ledger.

A policy keeps its own picture of the cluster; the harness keeps another (the `Ledger`) and checks
every assignment against it, so a policy that over-commits a node fails the run loudly instead of
producing a flattering number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .trace import MILLI_PER_GPU, NodeSpec, Task, arrival_order, cluster_gpus, node_order

HEADLINE_PCTS = (100, 130)


@dataclass(frozen=True)
class Assignment:
    """Where a task goes: `node` indexes the node list given to `Policy.start`; `gpu_milli` maps a
    GPU index on that node to the milli-GPUs taken there (empty for a CPU-only task)."""

    node: int
    gpu_milli: dict[int, int] = field(default_factory=dict)


class Policy(Protocol):
    """A placement policy under replay. It keeps its own state between calls."""

    name: str

    def start(self, nodes: list[NodeSpec], trace: list[Task], seed: int) -> None:
        """Begin a run on empty `nodes`. `trace` is the whole pod list (FGD draws its typical
        tasks from it); the policy may ignore it. `seed` seeds any randomness of the run."""

    def place(self, task: Task) -> Assignment | None:
        """Choose where `task` goes and take its resources, or None when it fits nowhere."""


class InvalidPlacement(RuntimeError):
    """A policy returned an assignment the ledger refuses; the message says why."""


class Ledger:
    """Free CPU (milli), memory (MiB) and per-GPU milli of every node, kept apart from any policy."""

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        self.nodes = list(nodes)
        self.cpu_left = [node.cpu_milli for node in self.nodes]
        self.memory_left = [node.memory_mib for node in self.nodes]
        self.gpu_left = [[MILLI_PER_GPU] * node.gpus for node in self.nodes]

    def rejection(self, task: Task, assignment: Assignment) -> str | None:
        """Why `assignment` of `task` is not allowed now, or None when it is."""
        if not 0 <= assignment.node < len(self.nodes):
            return f"node index {assignment.node} is not one of the {len(self.nodes)} nodes"
        index = assignment.node
        node = self.nodes[index]
        where = f"task {task.name} on node {node.name}"
        if not task.may_run_on(node.model):
            return f"{where}: model {node.model or '(none)'} is not one of {sorted(task.models)}"
        if task.cpu_milli > self.cpu_left[index]:
            return f"{where}: insufficient cpu: {self.cpu_left[index]} milli free, {task.cpu_milli} asked"
        if task.memory_mib > self.memory_left[index]:
            return f"{where}: insufficient memory: {self.memory_left[index]} MiB free, {task.memory_mib} asked"
        shares = assignment.gpu_milli
        if len(shares) != task.num_gpu:
            return f"{where}: takes {len(shares)} GPU(s), the task asks for {task.num_gpu}"
        for gpu, milli in shares.items():
            if not 0 <= gpu < node.gpus:
                return f"{where}: GPU index {gpu} does not exist (the node has {node.gpus})"
            if milli != task.gpu_milli:
                return f"{where}: takes {milli} milli on GPU {gpu}, the task asks for {task.gpu_milli} per GPU"
            if milli > self.gpu_left[index][gpu]:
                return f"{where}: insufficient GPU {gpu}: {self.gpu_left[index][gpu]} milli free, {milli} asked"
        return None

    def commit(self, task: Task, assignment: Assignment) -> None:
        """Take the task's resources, or raise InvalidPlacement and change nothing."""
        reason = self.rejection(task, assignment)
        if reason is not None:
            raise InvalidPlacement(reason)
        index = assignment.node
        self.cpu_left[index] -= task.cpu_milli
        self.memory_left[index] -= task.memory_mib
        for gpu, milli in assignment.gpu_milli.items():
            self.gpu_left[index][gpu] -= milli


@dataclass
class SeedResult:
    """One replay. Percentages are of the cluster's GPUs; `at_100`/`at_130` are the unallocated
    GPU % when arrived GPU first reaches 100 % / 130 % (None if the trace never gets there)."""

    policy: str
    seed: int
    at_100: float | None
    at_130: float | None
    decisions: int
    placed: int
    dropped: int
    seconds: float
    curve: list[tuple[float, float]]

    @property
    def placements_per_s(self) -> float:
        return self.decisions / self.seconds if self.seconds > 0 else float("inf")


def run(policy: Policy, nodes: Sequence[NodeSpec], trace: Sequence[Task], seed: int,
        until_pct: float = 130) -> SeedResult:
    """Replay the protocol once: shuffle the nodes, build the arrival order, offer every task.

    `seconds` counts only the time spent in `policy.place`. The curve holds, after every task,
    (arrived GPU %, allocated GPU %).
    """
    ordered_nodes = node_order(nodes, seed)
    total_milli = cluster_gpus(ordered_nodes) * MILLI_PER_GPU
    if total_milli == 0:
        raise ValueError("the cluster has no GPU: the protocol measures GPU allocation")
    arrivals = arrival_order(trace, cluster_gpus(ordered_nodes), seed, until_pct)
    policy.start(list(ordered_nodes), list(trace), seed)
    ledger = Ledger(ordered_nodes)
    arrived = allocated = placed = 0
    seconds = 0.0
    curve = []
    headline: dict[int, float] = {}
    for task in arrivals:
        began = time.perf_counter()
        assignment = policy.place(task)
        seconds += time.perf_counter() - began
        arrived += task.gpu_request_milli
        if assignment is not None:
            ledger.commit(task, assignment)
            allocated += task.gpu_request_milli
            placed += 1
        curve.append((100 * arrived / total_milli, 100 * allocated / total_milli))
        for pct in HEADLINE_PCTS:
            if pct not in headline and arrived * 100 >= pct * total_milli:
                headline[pct] = 100 - 100 * allocated / total_milli
    return SeedResult(
        policy=policy.name, seed=seed, at_100=headline.get(100), at_130=headline.get(130),
        decisions=len(arrivals), placed=placed, dropped=len(arrivals) - placed, seconds=seconds, curve=curve,
    )


PolicyFactory = Callable[[], Policy]

POLICIES: dict[str, PolicyFactory] = {}


def register(name: str, factory: PolicyFactory, *, replace: bool = False) -> None:
    """Make a policy available to the replay CLI under `name`."""
    if name in POLICIES and not replace:
        raise ValueError(f"a policy named {name!r} is already registered")
    POLICIES[name] = factory
