"""Random, BestFit and DotProduct as the FGD paper ran them (FGD itself lives in `fgd.py`).

Each scores every node that passes the filters (see `cluster.py`), keeps the highest score, and
picks a GPU inside the chosen node. Scores are truncated to integers exactly as the simulator
does, because that truncation decides which nodes tie.
"""

from __future__ import annotations

import numpy as np

from .cluster import (
    MAX_SPEC_CPU_MILLI,
    MAX_SPEC_GPU_MILLI,
    TIE_BREAKS,
    NodeArrays,
    TieBreak,
    pick_node,
    random_gpu,
    scored_cpu_milli,
    tightest_gpu,
    whole_gpus,
)
from .harness import Assignment
from .trace import NodeSpec, Task


class ScoredPolicy:
    """Filter, score, pick the best node, choose GPUs, take. Subclasses give `scores` and `share_gpu`."""

    name = "scored"

    def __init__(self, ties: TieBreak = "first") -> None:
        if ties not in TIE_BREAKS:
            raise ValueError(f"ties must be one of {TIE_BREAKS}, got {ties!r}")
        self.ties = ties

    def start(self, nodes: list[NodeSpec], trace: list[Task], seed: int) -> None:
        self.arrays = NodeArrays(nodes)
        self.rng = np.random.default_rng(seed)

    def place(self, task: Task) -> Assignment | None:
        candidates = np.flatnonzero(self.arrays.feasible(task))
        if len(candidates) == 0:
            return None
        if len(candidates) == 1:  # the scheduler skips scoring when one node is left
            node = int(candidates[0])
        else:
            node = pick_node(candidates, self.scores(task, candidates), self.ties, self.rng)
        gpu_left = self.arrays.gpu_left[node]
        if task.num_gpu == 0:
            gpus: list[int] = []
        elif task.is_gpu_share:
            gpus = [self.share_gpu(task, node, gpu_left)]
        else:
            gpus = whole_gpus(gpu_left, task.num_gpu)
        return self.arrays.take(task, node, gpus)

    def scores(self, task: Task, candidates: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def share_gpu(self, task: Task, node: int, gpu_left: np.ndarray) -> int:
        return tightest_gpu(gpu_left, task.gpu_milli)


class RandomPolicy(ScoredPolicy):
    """One feasible node uniformly at random (the simulator's RandomScore gives it 100, the rest
    0), and a random GPU with room for a share."""

    name = "random"

    def scores(self, task: Task, candidates: np.ndarray) -> np.ndarray:
        scores = np.zeros(len(candidates), dtype=np.int64)
        scores[self.rng.integers(len(candidates))] = 100
        return scores

    def share_gpu(self, task: Task, node: int, gpu_left: np.ndarray) -> int:
        return random_gpu(gpu_left, task.gpu_milli, self.rng)


class BestFitPolicy(ScoredPolicy):
    """The node left with the least free CPU and GPU after placement.

    score = int(100 x (1 - 0.5 (cpu_free - cpu_req) / 128000 - 0.5 (gpu_free - gpu_req) / 8000)),
    in 0..100, with gpu_free the node's total milli left. The simulator then min-max normalises the
    scores with integer division, which keeps exactly the same set of nodes on top, so it is skipped.
    Shares go to the tightest GPU.
    """

    name = "bestfit"

    def scores(self, task: Task, candidates: np.ndarray) -> np.ndarray:
        cpu_free = self.arrays.cpu_left[candidates].astype(np.float64)
        gpu_free = self.arrays.gpu_left[candidates].sum(axis=1).astype(np.float64)
        # Same order of float operations as the simulator, so truncation ties the same nodes.
        slack = (cpu_free - scored_cpu_milli(task)) / MAX_SPEC_CPU_MILLI * 0.5
        slack = slack + (gpu_free - task.gpu_request_milli) / MAX_SPEC_GPU_MILLI * 0.5
        return ((1.0 - slack) * 100.0).astype(np.int64)


class DotProductPolicy(ScoredPolicy):
    """Tetris-style alignment as configured for the paper (`-dimext merge -norm max -gpusel best`).

    With node = (cpu_free / 128000, gpu_free / 8000) and task = (cpu_req / 128000, gpu_req / 8000),
    score = int(100 x (1 - node . task / 2)), 0 where the node's CPU is short: the smallest dot
    product wins. Shares go to the tightest GPU.
    """

    name = "dotprod"

    def scores(self, task: Task, candidates: np.ndarray) -> np.ndarray:
        cpu_req = scored_cpu_milli(task)
        cpu_free = self.arrays.cpu_left[candidates].astype(np.float64)
        gpu_free = self.arrays.gpu_left[candidates].sum(axis=1).astype(np.float64)
        dot = (cpu_free / MAX_SPEC_CPU_MILLI) * (cpu_req / MAX_SPEC_CPU_MILLI)
        dot = dot + (gpu_free / MAX_SPEC_GPU_MILLI) * (task.gpu_request_milli / MAX_SPEC_GPU_MILLI)
        scores = (100.0 * (1 - dot / 2)).astype(np.int64)
        scores[self.arrays.cpu_left[candidates] < cpu_req] = 0
        return scores

