"""Fragmentation: how much capacity a placement makes unusable for the jobs the pool expects.

Free capacity is only worth something if the jobs that come can use it. For a node n and a
request shape t of the recent job mix (:mod:`poold.scheduler.mix`, probability p_t):

    usable_t(n) = sum over the devices of n that a job of shape t could take now of
                  (the device's free share if t takes a fraction, else 1),
                  and 0 when a job of shape t does not fit on n at all
                  (too few such devices, or too few CPU cores or host memory left)
    Φ(n)        = Σ_t p_t · usable_t(n)      (devices; the expected usable capacity)

This is FGD's measure (USENIX ATC'23, "Beware of Fragmentation"), whose fragment is the free
GPU capacity minus Φ, generalised to every device kind, MIG slices (a slice is usable by the
shapes that ask its profile), device memory, host memory, and the models each shape accepts
(so a flexible job is kept off the chips that strict jobs need). NVLink wishes of gang shapes
are not modelled. Unlike FGD's Kubernetes plugin, the measure is used exactly, not squashed
through a sigmoid into integer scores.

raw   = Φ_after − Φ_before on the candidate's node (≤ 0 mostly; in devices)
score = min-max over the decision's candidates onto 0..100 (the least loss 100)

Example, all jobs of one shape "half a GPU": placing one on a GPU that is half used leaves
Φ unchanged (that GPU's 0.5 was usable and the other GPUs still are: raw −0.5, as anywhere
the job goes it takes 0.5), but on a GPU 0.7 free it strands 0.2 that no half can use
(raw −0.7). The half-used GPU scores 100, the other 0.
"""

from __future__ import annotations

import numpy as np

from poold.scheduler.framework import Candidates, Context, min_max
from poold.scheduler.pool import EPSILON, ColumnarPool
from poold.scheduler.request import PlacementRequest


class Fragmentation:
    name = "fragmentation"

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        state = _state(ctx)
        if state is None or not len(candidates):
            return np.zeros(len(candidates))
        return state.loss(request, ctx, candidates)

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        return min_max(raw)


def _state(ctx: Context) -> "_MixState | None":
    types = ctx.mix.types()
    if not types:
        return None
    state = ctx.cache.get("fragmentation")
    if state is None or state.version != ctx.mix.version or state.layout != ctx.pool.layout:
        state = ctx.cache["fragmentation"] = _MixState(ctx)
    return state


class _MixState:
    """Per-type device masks and per-node usable capacity for one mix version and pool layout;
    node rows are recomputed when the node's generation moves."""

    def __init__(self, ctx: Context):
        pool, types = ctx.pool, ctx.mix.types()
        self.version, self.layout = ctx.mix.version, pool.layout
        self.p = np.array([t.probability for t in types])
        requests = [t.request for t in types]
        self.k = np.array([r.count for r in requests], dtype=np.int64)
        self.share = np.array([r.share for r in requests])
        self.fractional = self.share < 1
        self.cpu = np.array([r.cpu_cores for r in requests])
        self.mem = np.array([r.host_memory_mib for r in requests], dtype=np.int64)
        self.mem_per_device = np.array([-1 if r.memory_per_device_mib is None else r.memory_per_device_mib for r in requests], dtype=np.int64)
        self.static = np.zeros((len(types), pool.n_devices), dtype=bool)
        for t, request in enumerate(requests):
            self.static[t, ctx.static_devices(request)] = True
        self.seen_gen = np.full(pool.n_nodes, -1, dtype=np.int64)
        self.count = np.zeros((pool.n_nodes, len(types)))
        self.usable = np.zeros((pool.n_nodes, len(types)))
        self.phi = np.zeros(pool.n_nodes)

    def _device_usable(self, ctx: Context, slots: np.ndarray, free: np.ndarray, mem_free: np.ndarray):
        """[types, slots]: whether each type could take each device at ``free`` share and
        ``mem_free`` MiB, and the capacity it would count there."""
        pool = ctx.pool
        total = pool.dev_mem_total[slots]
        need = np.where(
            self.mem_per_device[:, None] >= 0,
            self.mem_per_device[:, None],
            np.where(total < 0, 0, np.floor(total[None, :] * self.share[:, None])),
        )
        ok = (
            self.static[:, slots]
            & pool.dev_healthy[slots][None, :]
            & (free[None, :] + EPSILON >= self.share[:, None])
            & ((total < 0)[None, :] | (need <= mem_free[None, :]))
        )
        value = np.where(self.fractional[:, None], free[None, :], 1.0)
        return ok, value

    def _refresh(self, ctx: Context, nodes: np.ndarray) -> None:
        pool = ctx.pool
        gens = pool.node_gen[nodes]
        stale = nodes[self.seen_gen[nodes] != gens]
        if not len(stale):
            return
        starts, ends = pool.node_start[stale].astype(np.int64), pool.node_end[stale].astype(np.int64)
        lengths = ends - starts
        slots = np.concatenate([np.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())]) if len(stale) else np.zeros(0, np.int64)
        ok, value = self._device_usable(ctx, slots, pool.dev_free[slots], _mem_free(pool, ctx, slots))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        count = _segment_sums(ok.astype(np.float64), bounds)
        usable = _segment_sums(ok * value, bounds)
        self.count[stale], self.usable[stale] = count.T, usable.T
        self.phi[stale] = self._phi(pool, stale, count, usable, 0.0, 0)
        self.seen_gen[stale] = pool.node_gen[stale]

    def _phi(self, pool: ColumnarPool, nodes: np.ndarray, count: np.ndarray, usable: np.ndarray, cpu: float, mem: int) -> np.ndarray:
        """Φ of ``nodes`` with [types, nodes] counts and capacities, after taking ``cpu`` and ``mem`` more."""
        node_ok = pool.node_ready[nodes] & ~pool.node_drained[nodes]
        cpu_free = pool.node_cpu[nodes] - pool.node_cpu_held[nodes] - cpu
        mem_free = pool.node_mem[nodes] - pool.node_mem_held[nodes] - mem
        fits = (
            node_ok[None, :]
            & (count + EPSILON >= self.k[:, None])
            & (cpu_free[None, :] + 1e-9 >= self.cpu[:, None])
            & (mem_free[None, :] >= self.mem[:, None])
        )
        return (self.p[:, None] * np.where(fits, usable, 0.0)).sum(axis=0)

    def loss(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        pool = ctx.pool
        nodes = candidates.node
        self._refresh(ctx, np.unique(nodes))
        count = self.count[nodes].T.copy()
        usable = self.usable[nodes].T.copy()
        if request.count:
            rows, width = candidates.devices.shape
            flat = candidates.devices.ravel()
            free, mem_free = pool.dev_free[flat], _mem_free(pool, ctx, flat)
            ok, value = self._device_usable(ctx, flat, free, mem_free)
            held = request.memory_to_hold(pool.dev_mem_total[flat])
            ok_after, value_after = self._device_usable(ctx, flat, free - request.share, mem_free - held)
            count += (ok_after.astype(np.float64) - ok).reshape(-1, rows, width).sum(axis=2)
            usable += (ok_after * value_after - ok * value).reshape(-1, rows, width).sum(axis=2)
        after = self._phi(pool, nodes, count, usable, request.cpu_cores, request.host_memory_mib)
        return after - self.phi[nodes]


def _mem_free(pool: ColumnarPool, ctx: Context, slots: np.ndarray) -> np.ndarray:
    free = pool.dev_mem_total[slots] - pool.dev_mem_held[slots]
    if ctx.options.count_outside_memory:
        free = free - pool.dev_mem_outside[slots]
    return free


def _segment_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sums of ``values[:, bounds[i]:bounds[i + 1]]`` for each i ([rows, segments])."""
    cumulative = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
    return cumulative[:, bounds[1:]] - cumulative[:, bounds[:-1]]
