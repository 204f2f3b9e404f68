"""Sum of squares: keep the pool's partly used devices spread over the sizes the mix can fill.

A job that takes a fraction of a device leaves a gap (the device's free share). A gap is filled
only by the jobs that fit it; when many gaps of one size wait, most of them stay empty. The
sum-of-squares rule of online bin packing (Csirik, Johnson, Kenyon, Orlin, Shor and Weber, "On
the sum-of-squares algorithm for bin packing", JACM 2006) puts each item where it least raises
Σ_c N(c)², N(c) being how many bins have a gap of size c; on item distributions that can be
packed perfectly its expected waste grows only as √n. Here the bins are devices and the sizes
are classes of gaps read from the recent job mix (:mod:`poold.scheduler.mix`), with s_min the
smallest share of one device among its shapes:

- a gap of s_min or more is in the class of the largest mix share that fits it (gaps the same
  jobs fit are alike);
- a gap under s_min but at least s_min / 2 fits no job of the mix: it is its own class, by its
  size in thousandths, so that making many gaps of one dead size costs more and more (closing
  them instead would reward them as perfect fits);
- a gap under s_min / 2 is closed (counted as a full device; the fragmentation scorer counts
  its waste), and a device with all of it free is no gap.

N is counted over the devices a request may use (those passing its static filters), kept per
static key and mix version, and brought up to date at each decision from the nodes whose
generation moved: one comparison over the node generations, as the engine's own caches make,
plus the changed nodes' devices.
"""

from __future__ import annotations

import numpy as np

from poold.scheduler.framework import Candidates, Context, min_max
from poold.scheduler.pool import ColumnarPool, concat_ranges
from poold.scheduler.request import PlacementRequest

LEVELS = 1000  # a device's free share, in thousandths
CLOSED, NO_GAP = 0, -1  # class codes; open classes are 1..LEVELS (shares) and LEVELS+1.. (dead sizes)
MAX_CENSUSES = 64


class SumOfSquares:
    """For a job taking a share s of one device, on a device whose gap (free share) is g:

        raw   = −g in thousandths      (per node, the tightest gap is offered first)
        Δ     = N(class(g − s)) + 1 − N(class(g))   (the rise of Σ N², halved), where N counts
                the gaps of each class among the devices the job may use, and a closed gap or
                an idle device counts 0 and adds nothing (no + 1)
        score = min-max of −Δ over the decision's candidates onto 0..100 (the least rise 100)

    Jobs taking whole devices, and CPU-only jobs, change no gap: every candidate scores 100.
    Example, mix shares 0.32, 0.47 and 0.65 (s_min = 0.32; gaps under 0.16 closed), a 0.32 job;
    the pool has 40 gaps of 0.35 (class 0.32), 90 of 0.53 (class 0.47) and 5 of 0.68 (class
    0.65). Into a 0.35 gap it leaves 0.03, closed: Δ = 0 − 40 = −40. Into a 0.53 gap it leaves
    0.21, dead, none yet: Δ = 0 + 1 − 90 = −89. On an idle device it leaves 0.68: Δ = 5 + 1 − 0
    = 6. −Δ = (40, 89, −6): the 0.53 gap scores 100 (the most crowded class gives one up), the
    0.35 gap 100 × (40 + 6) / 95 = 48.4, the idle device 0.
    """

    name = "sum_of_squares"

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        if not _splits_a_device(request) or not len(candidates):
            return np.zeros(len(candidates))
        return -_levels(ctx.pool.dev_free[candidates.devices[:, 0]]).astype(np.float64)

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        if not _splits_a_device(request) or not len(raw):
            return np.full(len(raw), 100.0)
        census = _census(request, ctx)
        if census is None:
            return np.full(len(raw), 100.0)
        gap = (-raw).astype(np.int64)
        left = np.maximum(gap - int(round(request.share * LEVELS)), 0)
        before, after = census.class_of[gap], census.class_of[left]
        rise = np.where(after > CLOSED, census.counts[np.maximum(after, 0)] + 1.0, 0.0)
        rise -= np.where(before > CLOSED, census.counts[np.maximum(before, 0)], 0.0)
        rise -= (after == before) & (after > CLOSED)  # a gap that stays in its class changes nothing
        return min_max(-rise)


def _splits_a_device(request: PlacementRequest) -> bool:
    return request.count == 1 and request.fractional


def _levels(free: np.ndarray) -> np.ndarray:
    return np.round(free * LEVELS).astype(np.int64)


def gap_classes(shares: list[float]) -> np.ndarray:
    """The class of each gap 0..LEVELS (thousandths) for a mix with these shares of one device;
    see the module docstring."""
    edges = np.unique(_levels(np.asarray(shares, dtype=np.float64)))
    level = np.arange(LEVELS + 1)
    fits = np.searchsorted(edges, level, side="right")  # how many mix shares fit: 0 = none
    by_share = np.where(fits > 0, edges[np.maximum(fits - 1, 0)], 0)
    dead = np.where(2 * level >= edges[0], LEVELS + level, CLOSED)
    classes = np.where(fits > 0, by_share, dead)
    classes[0] = CLOSED
    classes[LEVELS] = NO_GAP
    return classes


def _census(request: PlacementRequest, ctx: Context) -> "_Census | None":
    censuses = ctx.cache.setdefault("sum_of_squares", {})
    key = request.static_key
    census = censuses.get(key)
    pool, mix = ctx.pool, ctx.mix
    if census is None or census.layout != pool.layout or census.mix_version != mix.version or len(census.seen_gen) != pool.n_nodes:
        shares = [t.request.share for t in mix.types() if _splits_a_device(t.request)]
        if not shares:
            return None
        if len(censuses) >= MAX_CENSUSES:
            censuses.clear()
        census = censuses[key] = _Census(pool, ctx.static_devices(request), gap_classes(shares), mix.version)
    census.update(pool)
    return census


class _Census:
    """N(c): how many devices (of those one static key may use) have a gap of class c, kept
    current by node generation, for one pool layout and mix version."""

    def __init__(self, pool: ColumnarPool, devices: np.ndarray, class_of: np.ndarray, mix_version: int):
        self.layout, self.mix_version, self.class_of = pool.layout, mix_version, class_of
        self.member = np.zeros(pool.n_devices, dtype=bool)
        self.member[devices] = True
        self.cls = np.full(pool.n_devices, NO_GAP, dtype=np.int64)
        self.cls[devices] = self._classes(pool, devices)
        counted = self.cls[self.cls > CLOSED]
        self.counts = np.bincount(counted, minlength=2 * LEVELS + 1).astype(np.float64)
        self.seen_gen = pool.node_gen[: pool.n_nodes].copy()

    def update(self, pool: ColumnarPool) -> None:
        gens = pool.node_gen[: pool.n_nodes]
        stale = np.flatnonzero(gens != self.seen_gen)
        if not len(stale):
            return
        slots = concat_ranges(pool.node_start[stale], pool.node_end[stale])
        slots = slots[self.member[slots]]
        old, new = self.cls[slots], self._classes(pool, slots)
        np.add.at(self.counts, new[new > CLOSED], 1.0)
        np.subtract.at(self.counts, old[old > CLOSED], 1.0)
        self.cls[slots] = new
        self.seen_gen[stale] = gens[stale]

    def _classes(self, pool: ColumnarPool, slots: np.ndarray) -> np.ndarray:
        usable = pool.dev_alive[slots] & pool.dev_healthy[slots] & pool.dev_allocatable[slots]
        return np.where(usable, self.class_of[_levels(pool.dev_free[slots])], NO_GAP)
