"""Best fit: put the job where it leaves the least capacity free around it."""

import numpy as np

from poold.scheduler.framework import Candidates, Context, min_max
from poold.scheduler.request import PlacementRequest


class BestFit:
    """raw = the share of the node's allocatable device capacity in use after placing (0..1),
    plus, for a fraction of one device, that device's share in use after placing (0..1);
    for CPU-only jobs the share of the node's CPU cores held after placing.

    score = min-max over the decision's candidates onto 0..100 (the fullest fit 100). It
    decides only among placements the job mix rates alike (``fragmentation``), e.g. while the
    pool has seen too few jobs to know its mix.
    Example: one whole GPU on a node with 8 free of 8 has raw 1/8; on a node with 1 free of 2,
    raw 2/2, which scores 100.
    """

    name = "best_fit"

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        pool = ctx.pool
        nodes = candidates.node
        if request.count == 0:
            cores = pool.node_cpu[nodes]
            return np.where(cores > 0, (pool.node_cpu_held[nodes] + request.cpu_cores) / np.maximum(cores, 1e-9), 1.0)
        free, capacity = pool.node_free_share[nodes], pool.node_share_slots[nodes]
        taken = request.share * request.count
        raw = 1.0 - (free - taken) / np.maximum(capacity, 1.0)
        if request.fractional:
            raw = raw + 1.0 - (pool.dev_free[candidates.devices[:, 0]] - request.share)
        return raw

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        return min_max(raw)
