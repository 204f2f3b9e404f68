"""First fit: fill the pool's nodes in one fixed, seeded order, so that the rest stay whole."""

import numpy as np

from poold.scheduler.framework import Candidates, Context
from poold.scheduler.request import PlacementRequest

FULL_POOL = 1000  # nodes: from this size on, the order spans the whole 0..100
SMALL_POOL = 10  # nodes: under this size the span shrinks with the pool's size once more
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


class FirstFit:
    """raw = −u(node): u in [0, 1) is the node's place in a random order of the pool, a hash of
    the engine's seed and the node's id (so a node keeps its place while others join or leave,
    and two daemons with different seeds fill different nodes first).

    score = 100 − u × span, span = min(nodes in the pool, 1000) / 10: one point per ten nodes
    ahead in the order (u × nodes of them, on average), up to 100 points, so one point per
    hundredth of the pool in a pool of 1,000 nodes or more; absolute, whatever the candidates.
    Under 10 nodes the span shrinks further, by nodes / 10 (span = nodes² / 100), so that in a
    site of a few nodes best fit, weighed a hundredth of first fit, outweighs the order unless
    the nodes it compares are within 25 points (at 5 nodes). Range 0..100.

    First fit concentrates load on the nodes early in the order, so the later ones stay whole
    for gang jobs and fractions meet the partly used devices they can fill. Weighed against
    ``fragmentation`` (see ``poold.scheduler.stack``), it settles the many near-equal choices
    the job mix cannot tell apart.
    Example: in a pool of 1,000 nodes, nodes at u = 0.10 and u = 0.85 score 90 and 15; in a
    pool of 5 nodes (span 0.25), 99.975 and 99.7875: in a small pool first fit is weak, and
    the job mix, then best fit, decide (first fit pays off in pools of hundreds of nodes).
    """

    name = "first_fit"

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        return -node_order(ctx)[candidates.node]

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        nodes = min(ctx.pool.n_nodes, FULL_POOL)
        span = nodes / 10.0 * min(nodes / SMALL_POOL, 1.0)
        return 100.0 + raw * span


def node_order(ctx: Context) -> np.ndarray:
    """``place_in_order`` of every node slot of the pool, kept until nodes are added."""
    pool = ctx.pool
    order = ctx.cache.get("first_fit")
    if order is None or len(order) != pool.n_nodes:
        order = ctx.cache["first_fit"] = place_in_order(pool.node_id[: pool.n_nodes], ctx.options.seed)
    return order


def place_in_order(node_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform value in [0, 1) per node id, fixed by ``seed`` (splitmix64 of id and seed)."""
    x = node_ids.astype(np.uint64) + np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
