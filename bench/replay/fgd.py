"""Fragmentation Gradient Descent (FGD, USENIX ATC 2023) as the paper's simulator runs it.

Typical tasks: the trace's tasks grouped by shape (scored CPU, milli per GPU, GPU count, allowed
models), most frequent first, taken until they cover 95 % of the trace (CPU-only tasks included);
their frequencies are renormalised to sum to 1.

Fragment of a node for one typical task, in milli-GPUs:
- CPU-only typical task: all of the node's free GPU milli (whether or not its CPU fits);
- node model not allowed, or too little CPU, or too few GPUs with >= the task's milli left:
  all of the node's free GPU milli;
- otherwise only the free milli of GPUs with less than the task's milli left.
F(node) = sum over typical tasks of frequency x fragment.

Score of placing a task on a node: int(100 x sigmoid((F_before - F_after) / 1000)), 0..99, so a
placement that adds no fragment scores 50. A GPU share tries every GPU with room and keeps the
first one with the highest score; other tasks take whole GPUs (the lowest-indexed free ones).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .baselines import ScoredPolicy
from .cluster import TieBreak, scored_cpu_milli
from .harness import Assignment
from .trace import NodeSpec, Task

POPULARITY_PCT = 95

# Fragment buckets of the simulator, in the order it sums them (its "satisfied" bucket is left out).
_LACK_BOTH, _LACK_GPU, _LACK_CPU, _CPU_TASK_FITS, _CPU_TASK_SHORT, _NO_ACCESS = range(6)


@dataclass(frozen=True)
class TypicalTask:
    """One task shape and its frequency among the typical tasks (frequencies sum to 1)."""

    cpu_milli: int
    gpu_milli: int
    num_gpu: int
    models: frozenset[str]
    frequency: float


def typical_tasks(trace: Sequence[Task], popularity_pct: float = POPULARITY_PCT,
                  include_cpu_tasks: bool = True) -> list[TypicalTask]:
    """The most frequent task shapes covering `popularity_pct` % of `trace`, most frequent first.

    Equal counts are ordered by CPU, then milli, then GPU count, then model list, all descending,
    and the frequencies are computed with the simulator's float operations, since its sum order
    decides the last digits of F.
    """
    counts = Counter(
        (scored_cpu_milli(t), t.gpu_milli if t.num_gpu else 0, t.num_gpu, "|".join(sorted(t.models)))
        for t in trace if include_cpu_tasks or t.num_gpu
    )
    if not counts:
        return []
    shapes = sorted(counts.items(), key=lambda item: (item[1], *item[0]), reverse=True)
    total = float(sum(counts.values()))
    expected = float(popularity_pct) * total / 100.0
    covered, taken = 0.0, 0
    while covered < expected and taken < len(shapes):
        covered += shapes[taken][1]
        taken += 1
    scale = 1.0 if taken >= len(shapes) else covered / total
    return [
        TypicalTask(cpu, milli, num, frozenset(spec.split("|")) - {""}, (count / total) / scale)
        for (cpu, milli, num, spec), count in shapes[:taken]
    ]


class FragmentModel:
    """F(node) for many node states at once, given the typical tasks and the model of each id."""

    def __init__(self, typical: Sequence[TypicalTask], models: Sequence[str]) -> None:
        self.cpu = np.array([t.cpu_milli for t in typical], dtype=np.int64)
        self.milli = np.array([t.gpu_milli for t in typical], dtype=np.int64)
        self.num = np.array([t.num_gpu for t in typical], dtype=np.int64)
        self.frequency = np.array([t.frequency for t in typical], dtype=np.float64)
        self.is_cpu_task = self.milli == 0
        # access[model id, typical task]
        self.access = np.array([[not t.models or model in t.models for t in typical] for model in models],
                               dtype=bool).reshape(len(models), len(typical))

    def amount(self, cpu_left: np.ndarray, gpu_left: np.ndarray, model_id: np.ndarray) -> np.ndarray:
        """F in milli-GPUs for B node states: cpu_left (B,), gpu_left (B, G), model_id (B,)."""
        total = gpu_left.sum(axis=1)
        fits = gpu_left[:, None, :] >= self.milli[None, :, None]                  # (B, P, G)
        hostable = fits.sum(axis=2) >= self.num                                    # (B, P)
        stranded = np.where(fits, 0, gpu_left[:, None, :]).sum(axis=2)             # (B, P)
        cpu_ok = cpu_left[:, None] >= self.cpu[None, :]
        access = self.access[model_id]
        satisfied = access & hostable & cpu_ok & ~self.is_cpu_task
        bucket = np.where(hostable, _LACK_CPU, _LACK_BOTH)
        bucket = np.where(cpu_ok, _LACK_GPU, bucket)  # a satisfied task's stranded GPUs count as lacking GPU
        bucket = np.where(access, bucket, _NO_ACCESS)
        bucket = np.where(self.is_cpu_task, np.where(cpu_ok, _CPU_TASK_FITS, _CPU_TASK_SHORT), bucket)
        contribution = self.frequency * np.where(satisfied, stranded, total[:, None]).astype(np.float64)
        # The simulator adds the contributions one typical task at a time into each bucket, then the
        # buckets in order; cumsum adds sequentially, so F matches it to the last bit (without FMA).
        per_bucket = np.where(bucket[:, None, :] == np.arange(6)[None, :, None], contribution[:, None, :], 0.0)
        sums = np.cumsum(per_bucket, axis=2)[:, :, -1] if per_bucket.shape[2] else np.zeros((len(total), 6))
        result = sums[:, 0]
        for column in range(1, 6):
            result = result + sums[:, column]
        return result


def quantised_score(frag_before: np.ndarray, frag_after: np.ndarray) -> np.ndarray:
    """int(100 x sigmoid((F_before - F_after) / 1000)): 50 for no change, higher for less fragment."""
    return (1.0 / (1.0 + np.exp(-((frag_before - frag_after) / 1000))) * 100.0).astype(np.int64)


class _ShapeScores:
    """Scores of every node for one task shape, valid while the node's version is unchanged."""

    def __init__(self, size: int) -> None:
        self.score = np.zeros(size, dtype=np.int64)
        self.gpu = np.full(size, -1, dtype=np.int64)
        self.version = np.full(size, -1, dtype=np.int64)


class FgdPolicy(ScoredPolicy):
    """FGD with the simulator's quantised score. A node's scores for a task shape are cached and
    recomputed only after something was placed on that node; F of every node is kept current."""

    name = "fgd"

    def __init__(self, ties: TieBreak = "first", popularity_pct: float = POPULARITY_PCT) -> None:
        super().__init__(ties)
        self.popularity_pct = popularity_pct

    def start(self, nodes: list[NodeSpec], trace: list[Task], seed: int) -> None:
        super().start(nodes, trace, seed)
        arrays = self.arrays
        self.typical = typical_tasks(trace, self.popularity_pct)
        self.fragment = FragmentModel(self.typical, arrays.models)
        self.frag = self.fragment.amount(arrays.cpu_left, arrays.gpu_left, arrays.model_id)
        self.by_shape: dict[tuple[int, int, int], _ShapeScores] = {}

    def place(self, task: Task) -> Assignment | None:
        assignment = super().place(task)
        if assignment is not None:
            node = np.array([assignment.node])
            arrays = self.arrays
            self.frag[node] = self.fragment.amount(arrays.cpu_left[node], arrays.gpu_left[node], arrays.model_id[node])
        return assignment

    def scores(self, task: Task, candidates: np.ndarray) -> np.ndarray:
        return self._current(task, candidates).score[candidates]

    def share_gpu(self, task: Task, node: int, gpu_left: np.ndarray) -> int:
        return int(self._current(task, np.array([node])).gpu[node])

    def _current(self, task: Task, nodes: np.ndarray) -> _ShapeScores:
        """The shape's scores with those of `nodes` brought up to date."""
        key = (scored_cpu_milli(task), task.gpu_milli, task.num_gpu)
        cached = self.by_shape.get(key)
        if cached is None:
            cached = self.by_shape[key] = _ShapeScores(len(self.arrays.nodes))
        stale = nodes[cached.version[nodes] != self.arrays.version[nodes]]
        if len(stale):
            self._score(task, stale, cached)
            cached.version[stale] = self.arrays.version[stale]
        return cached

    def _score(self, task: Task, nodes: np.ndarray, into: _ShapeScores) -> None:
        arrays = self.arrays
        cpu_after = arrays.cpu_left[nodes] - scored_cpu_milli(task)
        gpu_left = arrays.gpu_left[nodes]
        model_id = arrays.model_id[nodes]
        before = self.frag[nodes]
        if task.is_gpu_share:
            rows, gpus = np.nonzero(gpu_left >= task.gpu_milli)
            gpu_after = gpu_left[rows]
            gpu_after[np.arange(len(rows)), gpus] -= task.gpu_milli
            after = self.fragment.amount(cpu_after[rows], gpu_after, model_id[rows])
            grid = np.full(gpu_left.shape, -1, dtype=np.int64)
            grid[rows, gpus] = quantised_score(before[rows], after)
            into.score[nodes] = grid.max(axis=1)
            into.gpu[nodes] = grid.argmax(axis=1)  # first GPU with the best score
            return
        gpu_after = gpu_left.copy()
        if task.num_gpu:
            room = gpu_left >= task.gpu_milli
            taken = room & (np.cumsum(room, axis=1) <= task.num_gpu)
            gpu_after -= np.where(taken, task.gpu_milli, 0)
        into.score[nodes] = quantised_score(before, self.fragment.amount(cpu_after, gpu_after, model_id))
