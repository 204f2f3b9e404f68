"""The FGD paper's workload: node and task records, their CSV loaders, and the arrival order.

Units: CPU in milli-cores, memory in MiB, GPU shares in milli-GPUs (1000 = one whole GPU).
"""

from __future__ import annotations

import csv
import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MILLI_PER_GPU = 1000

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
TASK_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file, line and column."""


@dataclass(frozen=True)
class NodeSpec:
    """One machine: `gpus` whole GPUs of one `model` (empty model when it has none)."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


@dataclass(frozen=True)
class Task:
    """One task of the trace.

    `num_gpu` 0 is a CPU-only task; 1 with `gpu_milli` < 1000 is a share of one GPU; k >= 1 with
    `gpu_milli` 1000 takes k whole GPUs of one node. `models` is the set of GPU models the task
    may run on; empty means any.
    """

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    models: frozenset[str] = frozenset()

    @property
    def gpu_request(self) -> float:
        """GPUs asked for, e.g. 0.5 or 4.0."""
        return self.gpu_request_milli / MILLI_PER_GPU

    @property
    def gpu_request_milli(self) -> int:
        """Milli-GPUs asked for in total: num_gpu x gpu_milli."""
        return self.num_gpu * self.gpu_milli

    @property
    def is_gpu_share(self) -> bool:
        """True for a task that takes a fraction of a single GPU."""
        return self.num_gpu == 1 and self.gpu_milli < MILLI_PER_GPU

    def may_run_on(self, model: str) -> bool:
        return not self.models or model in self.models


def cluster_gpus(nodes: Sequence[NodeSpec]) -> int:
    return sum(node.gpus for node in nodes)


def parse_gpu_spec(spec: str) -> frozenset[str]:
    """`"V100M16|V100M32"` -> {"V100M16", "V100M32"}; empty parts and repeats are ignored."""
    return frozenset(part.strip() for part in spec.split("|") if part.strip())


def load_nodes(path: str | Path) -> list[NodeSpec]:
    """Nodes from a CSV with columns sn, cpu_milli, memory_mib, gpu, model, in file order."""
    nodes = []
    lines = []
    for row in _rows(Path(path), NODE_COLUMNS):
        lines.append(row.line)
        nodes.append(NodeSpec(
            name=row.text("sn", required=True),
            cpu_milli=row.integer("cpu_milli"),
            memory_mib=row.integer("memory_mib"),
            gpus=row.integer("gpu"),
            model=row.text("model", required=False),
        ))
    _require_unique([node.name for node in nodes], lines, Path(path), "sn")
    return nodes


def load_tasks(path: str | Path) -> list[Task]:
    """Tasks from the openb pod CSV, in file order; rows that break the trace's rules are refused."""
    tasks = []
    lines = []
    for row in _rows(Path(path), TASK_COLUMNS):
        lines.append(row.line)
        num_gpu = row.integer("num_gpu")
        gpu_milli = row.integer("gpu_milli")
        if num_gpu == 0:
            gpu_milli = 0  # the simulator ignores gpu_milli when no GPU is asked for
        elif not 1 <= gpu_milli <= MILLI_PER_GPU:
            raise row.error("gpu_milli", f"must be 1..{MILLI_PER_GPU} for a GPU task, got {gpu_milli}")
        elif num_gpu > 1 and gpu_milli != MILLI_PER_GPU:
            raise row.error("gpu_milli", f"a {num_gpu}-GPU task must take whole GPUs (1000), got {gpu_milli}")
        tasks.append(Task(
            name=row.text("name", required=True),
            cpu_milli=row.integer("cpu_milli"),
            memory_mib=row.integer("memory_mib"),
            num_gpu=num_gpu,
            gpu_milli=gpu_milli,
            models=parse_gpu_spec(row.text("gpu_spec", required=False)),
        ))
    _require_unique([task.name for task in tasks], lines, Path(path), "name")
    return tasks


def node_order(nodes: Sequence[NodeSpec], seed: int) -> list[NodeSpec]:
    """The nodes shuffled with the run's seed (protocol step 1)."""
    shuffled = list(nodes)
    random.Random(f"nodes:{seed}").shuffle(shuffled)
    return shuffled


def arrival_order(tasks: Sequence[Task], cluster_gpus: int, seed: int, until_pct: float = 130) -> list[Task]:
    """The order tasks arrive in (protocol step 3).

    The trace sorted by name and shuffled with `seed`, then tasks drawn at random with replacement
    from the name-sorted trace, appended (named `<name>-tuned-<i>`) until the total GPU request
    reaches `until_pct` % of `cluster_gpus`. The last task appended is the one that crosses the line.
    """
    by_name = sorted(tasks, key=lambda task: task.name)
    rng = random.Random(seed)
    order = list(by_name)
    rng.shuffle(order)
    target_milli = cluster_gpus * MILLI_PER_GPU * until_pct / 100
    total_milli = sum(task.gpu_request_milli for task in order)
    if total_milli < target_milli and not any(task.gpu_request_milli for task in by_name):
        raise ValueError(f"no task asks for a GPU: the trace can never reach {until_pct} % of {cluster_gpus} GPUs")
    drawn = 0
    while total_milli < target_milli:
        task = by_name[rng.randrange(len(by_name))]
        order.append(dataclasses.replace(task, name=f"{task.name}-tuned-{drawn}"))
        total_milli += task.gpu_request_milli
        drawn += 1
    return order


@dataclass
class _Row:
    path: Path
    line: int
    values: dict[str, str]

    def error(self, column: str, problem: str) -> TraceError:
        return TraceError(f"{self.path}:{self.line}: column {column!r}: {problem}")

    def text(self, column: str, *, required: bool) -> str:
        value = (self.values.get(column) or "").strip()
        if required and not value:
            raise self.error(column, "is empty")
        return value

    def integer(self, column: str) -> int:
        value = self.text(column, required=True)
        try:
            number = int(value)
        except ValueError:
            raise self.error(column, f"expected a whole number, got {value!r}") from None
        if number < 0:
            raise self.error(column, f"must not be negative, got {number}")
        return number


def _rows(path: Path, columns: Sequence[str]) -> Iterator[_Row]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot open: {exc.strerror}") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        for values in reader:
            yield _Row(path, reader.line_num, values)


def _require_unique(names: list[str], lines: list[int], path: Path, column: str) -> None:
    first_line: dict[str, int] = {}
    for name, line in zip(names, lines):
        if name in first_line:
            raise TraceError(f"{path}:{line}: column {column!r}: {name!r} already named on line {first_line[name]}")
        first_line[name] = line
