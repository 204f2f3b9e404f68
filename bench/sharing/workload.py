"""The simulator's workload: trace tasks with arrival and duration, the cluster they run on,
and the queues they are spread over.

- Tasks: the GPU tasks of an openb pod CSV (``bench.replay.trace.load_tasks`` reads and checks
  the rows; ``creation_time`` and ``deletion_time`` are read here), in arrival order, the first
  ``limit``. A task runs ``deletion_time - creation_time`` seconds once placed, trimmed to
  ``max_duration_s`` (the trace keeps pods that ran for months). Its ``max_runtime`` is the
  estimate a user would give: 1.5 x the duration rounded up to the minute (an over-estimate,
  as real ones are). Priority from the trace's QoS class: LS and Guaranteed 1, others 0.
- Arrivals are compressed: every gap is divided by one factor, chosen so that the GPU-seconds
  asked for equal ``load`` x the cluster's GPUs over the arrival span (1.3: more is asked than
  the pool holds, so queues stay busy).
- Cluster: nodes of the node CSV taken in turn from each GPU model (file order within a model)
  until ``gpus`` GPUs; priced per model (``PRICES``, per GPU-hour).
- Queues: three by default (``default_queues``), or ``[queues.NAME]`` tables of a TOML file with
  the daemon's keys (``weight``, ``priority``, ``guarantee``, ``limit``) and ``share``, the
  fraction of the tasks it gets; a task goes to a queue by a hash of its name.
"""

from __future__ import annotations

import csv
import hashlib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.replay.trace import NodeSpec, Task, TraceError, load_tasks
from poold.scheduler.sharing import QueueEntitlement

# Per GPU-hour. G1-G3 are undisclosed models; priced like the generation they are thought to be.
PRICES = {"T4": 0.35, "P100": 1.46, "V100M16": 2.48, "V100M32": 2.48, "A10": 1.1, "G1": 1.2, "G2": 1.8, "G3": 2.9}
QOS_PRIORITY = {"LS": 1, "Guaranteed": 1}
RUNTIME_ESTIMATE = 1.5


@dataclass(frozen=True)
class TimedTask:
    task: Task
    arrival_s: float
    duration_s: float
    priority: int

    @property
    def max_runtime_s(self) -> float:
        """The user's estimate: 1.5 x the duration, rounded up to the minute."""
        return 60.0 * math.ceil(RUNTIME_ESTIMATE * self.duration_s / 60.0)

    @property
    def size(self) -> str:
        """The wait bucket: GPUs asked for, a share counting as 1."""
        return str(self.task.num_gpu)


@dataclass(frozen=True)
class SimQueue:
    entitlement: QueueEntitlement
    share: float


def load_timed_tasks(path: str | Path, limit: int, max_duration_s: float) -> list[TimedTask]:
    """The first ``limit`` GPU tasks by creation time, with arrival (from the first) and duration."""
    tasks = {task.name: task for task in load_tasks(path)}
    timed = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for field in ("creation_time", "deletion_time", "qos"):
            if field not in (reader.fieldnames or []):
                raise TraceError(f"{path}:1: missing column {field!r}: the simulator needs arrival and end times")
        for row in reader:
            task = tasks[row["name"]]
            if task.num_gpu == 0:
                continue
            start, end = int(row["creation_time"]), int(row["deletion_time"])
            duration = min(float(max(end - start, 1)), max_duration_s)
            timed.append(TimedTask(task, float(start), duration, QOS_PRIORITY.get(row["qos"], 0)))
    timed.sort(key=lambda t: (t.arrival_s, t.task.name))
    timed = timed[:limit]
    if not timed:
        raise TraceError(f"{path}: no GPU task to simulate")
    first = timed[0].arrival_s
    return [TimedTask(t.task, t.arrival_s - first, t.duration_s, t.priority) for t in timed]


def compress(tasks: list[TimedTask], gpus: int, load: float) -> tuple[list[TimedTask], float]:
    """Arrivals squeezed so that the GPU-seconds asked for are ``load`` x ``gpus`` over the
    span; returns the tasks and the factor gaps were divided by (at least 1: never stretched)."""
    span = tasks[-1].arrival_s - tasks[0].arrival_s
    asked = sum(t.task.gpu_request * t.duration_s for t in tasks)
    factor = max(1.0, span * load * gpus / asked) if asked and span else 1.0
    return [TimedTask(t.task, t.arrival_s / factor, t.duration_s, t.priority) for t in tasks], factor


def pick_nodes(nodes: list[NodeSpec], gpus: int) -> list[NodeSpec]:
    """GPU nodes taken in turn from each model, in file order, until ``gpus`` GPUs are reached."""
    by_model: dict[str, list[NodeSpec]] = {}
    for node in nodes:
        if node.gpus:
            by_model.setdefault(node.model, []).append(node)
    picked: list[NodeSpec] = []
    total = 0
    while total < gpus and any(by_model.values()):
        for model in sorted(by_model):
            if by_model[model] and total < gpus:
                node = by_model[model].pop(0)
                picked.append(node)
                total += node.gpus
    return picked


def default_queues(pool_cost_per_hour: float) -> list[SimQueue]:
    """prod (weight 2, guaranteed 30 % of the pool's cost), research and batch (weight 1 each);
    45 %, 30 % and 25 % of the tasks."""
    return [
        SimQueue(QueueEntitlement("prod", weight=2.0, guarantee={"cost": round(0.3 * pool_cost_per_hour, 2)}), 0.45),
        SimQueue(QueueEntitlement("research", weight=1.0), 0.30),
        SimQueue(QueueEntitlement("batch", weight=1.0), 0.25),
    ]


def load_queues(path: str | Path) -> list[SimQueue]:
    """``[queues.NAME]`` tables: weight, priority, guarantee, limit (the daemon's keys) and share."""
    data = tomllib.loads(Path(path).read_text())
    tables = data.get("queues")
    if not isinstance(tables, dict) or not tables:
        raise ValueError(f"{path}: no [queues.NAME] table")
    queues = []
    for name, table in tables.items():
        unknown = set(table) - {"weight", "priority", "guarantee", "limit", "share"}
        if unknown:
            raise ValueError(f"{path}: queues.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        entitlement = QueueEntitlement(name, priority=int(table.get("priority", 0)), weight=float(table.get("weight", 1.0)),
                                       guarantee=dict(table.get("guarantee", {})), limit=dict(table.get("limit", {})))
        queues.append(SimQueue(entitlement, float(table.get("share", 1.0))))
    return queues


def queue_of(name: str, queues: list[SimQueue]) -> str:
    """The queue a task goes to: a hash of its name placed on the queues' shares."""
    point = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64 * sum(q.share for q in queues)
    for queue in queues:
        point -= queue.share
        if point < 0:
            return queue.entitlement.name
    return queues[-1].entitlement.name
