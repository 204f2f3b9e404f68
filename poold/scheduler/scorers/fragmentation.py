"""Fragmentation: how much room a placement takes from the jobs the pool expects.

Free capacity is only worth something if the jobs that come can use it. For a node n and a
request shape t of the recent job mix (:mod:`poold.scheduler.mix`, probability p_t):

    copies_t(n) = how many jobs of shape t fit on n now, counting device slots (a device with
                  free share f holds ⌊f / share_t⌋ of them, fewer if its memory is short; the
                  devices must be ones t accepts), CPU cores and host memory
    Φ(n)        = Σ_t p_t · copies_t(n)      (jobs: how many of the next job fit, expected)

This follows FGD (USENIX ATC'23, "Beware of Fragmentation"), whose fragment is the free GPU
capacity that the typical tasks cannot use, generalised to every device kind, MIG slices (a
slice is usable by the shapes that ask its profile), device memory, host memory, and the
models each shape accepts (so a flexible job is kept off the chips that strict jobs need).
Counting copies rather than FGD's "fits or not" makes CPU cores and host memory count in
proportion (a node whose cores run out before its devices holds fewer copies), and counting
them by job rather than by device capacity keeps the small shares that fill other jobs' gaps
in view. NVLink wishes of gang shapes are not modelled.

raw   = Φ_after − Φ_before on the candidate's node (jobs; ≤ 0)
score = 100 − 100 × (best raw among the decision's candidates − raw), at least 0: 100 points
        per expected job lost beyond the best candidate, absolute rather than min-max, so that
        it weighs the same against ``first_fit`` in every decision (see
        ``poold.scheduler.stack``). Range 0..100.

Example, a mix of two shapes, "half a GPU" and "one GPU", each with p = 0.5: a half placed on
a GPU that is half used takes the one half-copy there (raw = 0.5 × −1 = −0.5); on an idle GPU
it takes one of two half-copies and the GPU's whole copy (raw = 0.5 × −1 + 0.5 × −1 = −1.0).
The half-used GPU scores 100, the idle one 100 − 100 × 0.5 = 50.
"""

from __future__ import annotations

import numpy as np

from poold.scheduler.framework import Candidates, Context
from poold.scheduler.pool import EPSILON, ColumnarPool, concat_ranges, node_runs
from poold.scheduler.request import PlacementRequest


class Fragmentation:
    name = "fragmentation"
    reads_mix = True

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        state = _state(ctx)
        if state is None or not len(candidates):
            return np.zeros(len(candidates))
        return state.loss(request, ctx, candidates)

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        if not len(raw):
            return raw.astype(np.float64)
        return np.clip(100.0 - 100.0 * (float(raw.max()) - raw), 0.0, 100.0)


def _state(ctx: Context) -> "_MixState | None":
    types = ctx.mix.types()
    if not types:
        return None
    state = ctx.cache.get("fragmentation")
    if state is None or state.version != ctx.mix.version or state.layout != ctx.pool.layout:
        state = ctx.cache["fragmentation"] = _MixState(ctx)
    return state


class _MixState:
    """Per-type device columns and per-node copies for one mix version and pool layout; node
    rows are recomputed when the node's generation moves. Arrays are device- or node-major
    ([devices, types], [nodes, types]): a decision reads the rows of a few devices and nodes."""

    def __init__(self, ctx: Context):
        pool, types = ctx.pool, ctx.mix.types()
        self.version, self.layout = ctx.mix.version, pool.layout
        self.p = np.array([t.probability for t in types])
        requests = [t.request for t in types]
        k = np.array([r.count for r in requests], dtype=np.float64)
        share = np.array([r.share for r in requests])
        cpu = np.array([r.cpu_cores for r in requests])
        mem = np.array([r.host_memory_mib for r in requests], dtype=np.float64)
        mem_per_device = np.array([-1 if r.memory_per_device_mib is None else r.memory_per_device_mib for r in requests], dtype=np.int64)
        self.per_share, self.per_k = 1.0 / share, 1.0 / k
        # Per device and type, fixed for the layout: ``usable`` 1 where the type may use the
        # device; ``per_need`` 1 / the memory one job of the type needs there (0 where memory
        # does not bound it) and ``unbounded`` +inf where memory does not bound it, else 0
        # (see _device_slots). Where memory bounds no device for any type (a pool that reports
        # none), the memory step is skipped.
        n = pool.n_devices
        self.usable = np.zeros((n, len(types)))
        for t, request in enumerate(requests):
            self.usable[ctx.static_devices(request), t] = 1.0
        total = pool.dev_mem_total[:n].astype(np.float64)
        need = np.where(mem_per_device[None, :] >= 0, mem_per_device[None, :], np.floor(total[:, None] * share[None, :]))
        bounded = (total[:, None] >= 0) & (need > 0)
        self.memory_bounds = bool(bounded.any())
        self.per_need = np.where(bounded, 1.0 / np.where(bounded, need, 1.0), 0.0)
        self.unbounded = np.where(bounded, 0.0, np.inf)
        # Per type: 1 / its cores (0 when it takes none, then +inf copies by cores), alike for memory.
        self.per_cpu = np.where(cpu > 0, 1.0 / np.where(cpu > 0, cpu, 1.0), 0.0)
        self.cpu_unbounded = np.where(cpu > 0, 0.0, np.inf)
        self.per_mem = np.where(mem > 0, 1.0 / np.where(mem > 0, mem, 1.0), 0.0)
        self.mem_unbounded = np.where(mem > 0, 0.0, np.inf)
        self.seen_gen = np.full(pool.n_nodes, -1, dtype=np.int64)
        self.slots = np.zeros((pool.n_nodes, len(types)))  # per node and type: the jobs its devices hold
        self.phi = np.zeros(pool.n_nodes)
        self.device_slots = np.zeros((pool.n_devices, len(types)))  # per device and type, kept with the node rows

    def _device_slots(self, ctx: Context, slots: np.ndarray, free: np.ndarray, mem_free: np.ndarray) -> np.ndarray:
        """[slots, types]: how many jobs of each type each device could take at ``free`` share
        and ``mem_free`` MiB (0 or 1 for whole devices)."""
        offered = np.where(ctx.pool.dev_healthy[slots], free, 0.0)  # an unhealthy device takes no job
        fits = np.floor((offered[:, None] + EPSILON) * self.per_share)
        if self.memory_bounds:
            np.minimum(fits, np.floor(np.maximum(mem_free, 0)[:, None] * self.per_need[slots]) + self.unbounded[slots], out=fits)
        fits *= self.usable[slots]
        return fits

    def _refresh(self, ctx: Context, nodes: np.ndarray) -> None:
        """Bring the rows of ``nodes`` (distinct) up to date."""
        pool = ctx.pool
        stale = nodes[self.seen_gen[nodes] != pool.node_gen[nodes]]
        if len(stale):
            slots, bounds = self._rows(ctx, stale)
            self._update(ctx, stale, slots, self._device_slots(ctx, slots, pool.dev_free[slots], _mem_free(pool, ctx, slots)), bounds)

    def _rows(self, ctx: Context, stale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The device slots of the ``stale`` nodes, and the offsets of each node's in them."""
        pool = ctx.pool
        starts, ends = pool.node_start[stale].astype(np.int64), pool.node_end[stale].astype(np.int64)
        return concat_ranges(starts, ends), np.concatenate([[0], np.cumsum(ends - starts)])

    def _update(self, ctx: Context, stale: np.ndarray, slots: np.ndarray, per_device: np.ndarray, bounds: np.ndarray) -> None:
        """Keep the ``stale`` nodes' rows from their devices' slots ``per_device`` (``_rows``)."""
        pool = ctx.pool
        self.device_slots[slots] = per_device
        node_slots = per_device.sum(axis=0, keepdims=True) if len(stale) == 1 else _segment_sums(per_device, bounds)
        self.slots[stale] = node_slots
        self.phi[stale] = self._copies(pool, stale, node_slots, 0.0, 0) @ self.p
        self.seen_gen[stale] = pool.node_gen[stale]

    def _copies(self, pool: ColumnarPool, nodes: np.ndarray, slots: np.ndarray, cpu, mem) -> np.ndarray:
        """[nodes, types]: how many jobs of each type fit on each node, given its device slots,
        after taking ``cpu`` cores and ``mem`` MiB more (numbers, or one per node)."""
        cpu_free = np.maximum(pool.node_cpu[nodes] - pool.node_cpu_held[nodes] - cpu, 0.0)
        mem_free = np.maximum(pool.node_mem[nodes] - pool.node_mem_held[nodes] - mem, 0.0)
        copies = np.floor((slots + EPSILON) * self.per_k)
        np.minimum(copies, np.floor((cpu_free[:, None] + 1e-9) * self.per_cpu) + self.cpu_unbounded, out=copies)
        np.minimum(copies, np.floor(mem_free[:, None] * self.per_mem + 1e-9) + self.mem_unbounded, out=copies)
        node_ok = pool.node_ready[nodes] & ~pool.node_drained[nodes]
        if not node_ok.all():
            copies[~node_ok] = 0.0
        return copies

    def loss(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        """Φ after − Φ before on each candidate's node. The stale nodes' rows and the candidates'
        devices after placing are worked out in one pass over the type columns."""
        pool = ctx.pool
        nodes = candidates.node
        stale = nodes[self.seen_gen[nodes] != pool.node_gen[nodes]]
        if len(stale) > 1:
            stale = node_runs(stale)[0]  # candidates come grouped by node: one row per node
        rows, width = candidates.devices.shape
        flat = candidates.devices.ravel()
        if len(stale):
            slots, bounds = self._rows(ctx, stale)
            everything = np.concatenate([slots, flat])
            free, mem_free = pool.dev_free[everything], _mem_free(pool, ctx, everything)
            if width:
                free[len(slots):] -= request.share
                mem_free[len(slots):] -= request.memory_to_hold(pool.dev_mem_total[flat])
            per_device = self._device_slots(ctx, everything, free, mem_free)
            self._update(ctx, stale, slots, per_device[: len(slots)], bounds)
            after = per_device[len(slots):]
        elif width:
            held = request.memory_to_hold(pool.dev_mem_total[flat])
            after = self._device_slots(ctx, flat, pool.dev_free[flat] - request.share, _mem_free(pool, ctx, flat) - held)
        node_slots = self.slots[nodes]
        if width:
            change = after - self.device_slots[flat]
            node_slots += change if width == 1 else change.reshape(rows, width, -1).sum(axis=1)
        after_phi = self._copies(pool, nodes, node_slots, request.cpu_cores, request.host_memory_mib) @ self.p
        # Rounded: equal losses compare equal, whatever order the sums were taken in.
        return np.round(after_phi - self.phi[nodes], 9)


def _mem_free(pool: ColumnarPool, ctx: Context, slots: np.ndarray) -> np.ndarray:
    free = pool.dev_mem_total[slots] - pool.dev_mem_held[slots]
    if ctx.options.count_outside_memory:
        free = free - pool.dev_mem_outside[slots]
    return free


def _segment_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sums of ``values[bounds[i]:bounds[i + 1]]`` for each i ([segments, columns]; empty
    segments sum to 0, which ``np.add.reduceat`` does not give)."""
    cumulative = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    return cumulative[bounds[1:]] - cumulative[bounds[:-1]]


def fragmentation_by_model(ctx: Context) -> dict[str, float]:
    """Per device model, the share of its free capacity that the recent job mix cannot use
    (0..1), the measure this scorer works with, read as FGD reads its fragment:

        for each shape t of the mix that accepts some device of the model, a free device
        (or slice) of it counts as stranded for t unless it can take one job of t and its
        node can host the whole job (its other devices, CPU cores, host memory)

        fragmentation(M) = Σ_t p_t · free capacity of M stranded for t
                           / Σ_t p_t · free capacity of M that t accepts

    Free capacity is counted in whole devices (a MIG slice as its slices of 7). Devices out
    of service, or on nodes that are lost or drained, count in neither sum. Models that no
    shape of the mix accepts are left out (the mix says nothing about them); models with
    nothing free are 0. Empty when the mix is empty.
    """
    state = _state(ctx)
    if state is None:
        return {}
    pool = ctx.pool
    nodes = np.flatnonzero(pool.node_alive[: pool.n_nodes])
    if not len(nodes):
        return {}
    state._refresh(ctx, nodes)
    n = pool.n_devices
    node_of = pool.dev_node[:n]
    on_ok_node = pool.node_ready[node_of] & ~pool.node_drained[node_of]
    counted = pool.dev_alive[:n] & pool.dev_allocatable[:n] & pool.dev_healthy[:n] & on_ok_node
    whole = np.where(pool.dev_slices[:n] > 0, pool.dev_slices[:n] / 7.0, 1.0)
    free = np.where(counted, pool.dev_free[:n] * whole, 0.0)
    copies = state._copies(pool, np.arange(pool.n_nodes), state.slots, 0.0, 0).T  # [types, nodes]
    node_hosts = copies >= 1.0 - EPSILON
    accepted = state.usable[:n].T > 0  # [types, devices]
    usable = accepted & (state.device_slots[:n].T >= 1.0 - EPSILON) & node_hosts[:, node_of]
    result: dict[str, float] = {}
    models = pool.dev_model[:n]
    for code in np.unique(models[pool.dev_alive[:n]]):
        of_model = models == code
        takers = accepted[:, of_model].any(axis=1)
        if not takers.any():
            continue
        in_reach = (accepted[:, of_model] * free[of_model]).sum(axis=1)
        stranded = ((accepted[:, of_model] & ~usable[:, of_model]) * free[of_model]).sum(axis=1)
        total = float(state.p @ in_reach)
        result[pool.models.names[int(code)]] = float(state.p @ stranded) / total if total > EPSILON else 0.0
    return result
