"""The baselines' own picture of the cluster, as numpy arrays, and the choices they share.

What the FGD paper's simulator (Kubernetes 1.20 scheduler framework plus the simulator's plugins)
does, restated:

- Filters: Kubernetes' NodeResourcesFit (CPU and memory requests against what is left) and the
  simulator's Open-Gpu-Share filter (the GPU model constraint, then enough GPUs with enough milli
  left: one GPU with >= gpu_milli for a share, k whole free GPUs for a k-GPU task).
- Scoring counts a CPU request of 0 as 100 milli (Kubernetes' non-zero request), filtering does not.
- Ties: the simulator vendors a patched scheduler whose `selectHost` keeps, among the nodes with the
  highest score, the one with the lexicographically smallest name, and it names every node
  `"%04d-" + name` from a permutation drawn with the run's seed. Ties therefore go to a fixed,
  seed-shuffled node priority: here, the lowest index in the node list the harness hands over,
  which it shuffled with the seed ("first"). Upstream Kubernetes picks uniformly at random among
  the tied nodes ("random"). "first" is the default: the paper's figures were made with it.
- A whole-GPU task takes the lowest-indexed free GPUs of the chosen node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .harness import Assignment
from .trace import MILLI_PER_GPU, NodeSpec, Task

MAX_SPEC_CPU_MILLI = 128_000
MAX_SPEC_GPU_MILLI = 8_000
NON_ZERO_CPU_MILLI = 100

TieBreak = Literal["first", "random"]
TIE_BREAKS: tuple[TieBreak, ...] = ("first", "random")


def scored_cpu_milli(task: Task) -> int:
    """The CPU request as Kubernetes scores it: 0 counts as 100 milli."""
    return task.cpu_milli or NON_ZERO_CPU_MILLI


class NodeArrays:
    """Free resources of every node, indexed like the node list given to the policy.

    `gpu_left[n, g]` is the milli left on GPU g of node n; GPUs a node does not have are 0, which
    no GPU task (gpu_milli >= 1) can use.
    """

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        self.nodes = list(nodes)
        self.models = sorted({node.model for node in self.nodes})
        model_index = {model: i for i, model in enumerate(self.models)}
        width = max([node.gpus for node in self.nodes] + [1])
        self.cpu_left = np.array([node.cpu_milli for node in self.nodes], dtype=np.int64)
        self.memory_left = np.array([node.memory_mib for node in self.nodes], dtype=np.int64)
        self.gpu_left = np.zeros((len(self.nodes), width), dtype=np.int64)
        for i, node in enumerate(self.nodes):
            self.gpu_left[i, :node.gpus] = MILLI_PER_GPU
        self.model_id = np.array([model_index[node.model] for node in self.nodes], dtype=np.int64)
        self.version = np.zeros(len(self.nodes), dtype=np.int64)
        self._model_masks: dict[frozenset[str], np.ndarray] = {}

    def allowed_models(self, models: frozenset[str]) -> np.ndarray:
        """Per model id: may a task restricted to `models` (empty = any) use it."""
        mask = self._model_masks.get(models)
        if mask is None:
            mask = np.array([not models or model in models for model in self.models], dtype=bool)
            self._model_masks[models] = mask
        return mask

    def feasible(self, task: Task) -> np.ndarray:
        """Boolean mask of the nodes that pass the simulator's filters for `task`."""
        mask = (self.cpu_left >= task.cpu_milli) & (self.memory_left >= task.memory_mib)
        if task.num_gpu:
            mask &= self.allowed_models(task.models)[self.model_id]
            fitting = (self.gpu_left >= task.gpu_milli).sum(axis=1)
            mask &= fitting >= task.num_gpu
        return mask

    def take(self, task: Task, node: int, gpus: Sequence[int]) -> Assignment:
        """Charge `task` to `node`, `task.gpu_milli` on each of `gpus`; returns the assignment."""
        self.cpu_left[node] -= task.cpu_milli
        self.memory_left[node] -= task.memory_mib
        for gpu in gpus:
            self.gpu_left[node, gpu] -= task.gpu_milli
        self.version[node] += 1
        return Assignment(node=node, gpu_milli={int(gpu): task.gpu_milli for gpu in gpus})


def pick_node(candidates: np.ndarray, scores: np.ndarray, ties: TieBreak, rng: np.random.Generator) -> int:
    """The candidate with the highest score; among ties the first in node order, or a random one.

    `candidates` must be in increasing node order."""
    top = candidates[scores == scores.max()]
    if len(top) == 1 or ties == "first":
        return int(top[0])
    return int(top[rng.integers(len(top))])


def whole_gpus(gpu_left: np.ndarray, count: int) -> list[int]:
    """The `count` lowest-indexed completely free GPUs of one node."""
    return [int(g) for g in np.flatnonzero(gpu_left == MILLI_PER_GPU)[:count]]


def tightest_gpu(gpu_left: np.ndarray, milli: int) -> int:
    """Best-fit GPU for a share: least milli left among those with >= `milli`, lowest index on ties."""
    left = np.where(gpu_left >= milli, gpu_left, np.iinfo(np.int64).max)
    return int(np.argmin(left))


def random_gpu(gpu_left: np.ndarray, milli: int, rng: np.random.Generator) -> int:
    """A GPU with >= `milli` left, uniformly at random."""
    fitting = np.flatnonzero(gpu_left >= milli)
    return int(fitting[rng.integers(len(fitting))])
