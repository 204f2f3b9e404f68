"""Candidate generation: which devices of a node make one placement of a request.

- A CPU-only job: the node itself, no devices.
- One device (whole, a share of one, or a MIG slice): every feasible device is a candidate;
  scorers decide between devices of one node as between nodes.
- Several devices on one node (a gang): for each node and chip model, the best-connected set
  of ``count`` feasible devices, by an exact search in tiers: every pair joined by NVLink
  (``TIER_NVLINK``), else every pair under one PCIe switch (``TIER_SWITCH``), else all on one
  NUMA node (``TIER_NUMA``), else any (``TIER_ANY``). Within the best tier that has a set, the
  set with the most NVLink links wins, then one NUMA node, then the set that leaves the fewest
  free devices behind in the NUMA nodes it touches (so whole NUMA halves stay free for the
  next gang), then the lowest positions. Searches are memoised by topology and free devices:
  nodes of one make look alike.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from poold.scheduler.framework import Candidates, Context
from poold.scheduler.pool import PCIE_LEVELS, NodeTopology
from poold.scheduler.request import PlacementRequest

TIER_NVLINK, TIER_SWITCH, TIER_NUMA, TIER_ANY = 0, 1, 2, 3
TIER_NAMES = ("all pairs on NVLink", "one PCIe switch", "one NUMA node", "spread over the node")
_SWITCH = PCIE_LEVELS.index("single_switch")
# Sets examined at most per search; past it the search keeps the best set found so far.
MAX_SETS = 20000
_memo: dict[tuple, tuple[tuple[int, ...], int, int] | None] = {}


def speed_by_model(request: PlacementRequest, ctx: Context) -> np.ndarray:
    """The job's speed on each model code of the pool (NaN for models it does not accept)."""
    names = ctx.pool.models.names
    speeds = [request.speed_on(name) for name in names]
    return np.array([np.nan if s is None else s for s in speeds], dtype=np.float64)


def cpu_only(request: PlacementRequest, ctx: Context, nodes: np.ndarray) -> Candidates:
    count = len(nodes)
    return Candidates(
        node=nodes,
        devices=np.zeros((count, 0), dtype=np.int64),
        model=np.full(count, -1, dtype=np.int64),
        price=np.zeros(count),
        speed=np.ones(count),
        tier=np.zeros(count, dtype=np.int8),
        links=np.zeros(count, dtype=np.int64),
    )


def single_devices(request: PlacementRequest, ctx: Context, devices: np.ndarray, speeds: np.ndarray) -> Candidates:
    pool, count = ctx.pool, len(devices)
    model = pool.dev_model[devices].astype(np.int64)
    return Candidates(
        node=pool.dev_node[devices].astype(np.int64),
        devices=devices.astype(np.int64).reshape(count, 1),
        model=model,
        price=pool.dev_price[devices] * request.share,
        speed=speeds[model] if count else np.zeros(0),
        tier=np.zeros(count, dtype=np.int8),
        links=np.zeros(count, dtype=np.int64),
    )


def gangs(request: PlacementRequest, ctx: Context, groups: list[np.ndarray], speeds: np.ndarray) -> Candidates:
    """One candidate per group (feasible devices of one model on one node, at least ``count``)."""
    pool, count = ctx.pool, request.count
    rows = len(groups)
    chosen = np.zeros((rows, count), dtype=np.int64)
    tiers = np.zeros(rows, dtype=np.int8)
    links = np.zeros(rows, dtype=np.int64)
    for row, devices in enumerate(groups):
        node = int(pool.dev_node[devices[0]])
        start = int(pool.node_start[node])
        topology = pool.node_topology[node]
        free = tuple(int(d) - start for d in devices)
        available = tuple(int(d) - start for d in pool.devices_of(node) if pool.dev_free[d] >= 1 and pool.dev_allocatable[d])
        positions, tiers[row], links[row] = best_gang(topology, pool.dev_numa[start : int(pool.node_end[node])], free, count, available)
        chosen[row] = [start + p for p in positions]
    model = pool.dev_model[chosen[:, 0]].astype(np.int64) if rows else np.zeros(0, dtype=np.int64)
    return Candidates(
        node=pool.dev_node[chosen[:, 0]].astype(np.int64) if rows else np.zeros(0, dtype=np.int64),
        devices=chosen,
        model=model,
        price=pool.dev_price[chosen].sum(axis=1) * request.share if rows else np.zeros(0),
        speed=speeds[model] if rows else np.zeros(0),
        tier=tiers,
        links=links,
    )


def best_gang(
    topology: NodeTopology, numa: np.ndarray, free: tuple[int, ...], count: int, available: tuple[int, ...] = ()
) -> tuple[tuple[int, ...], int, int]:
    """The best set of ``count`` positions out of ``free`` (see the module docstring), with its
    tier and its NVLink links summed over pairs. ``available`` are the node's idle devices
    (for the leave-whole-NUMA-nodes-free rule); ``numa`` is per position, -1 unknown."""
    key = (topology.key, free, count, available)
    found = _memo.get(key)
    if found is not None:
        return found
    result = _search(topology, numa, free, count, set(available) or set(free))
    if len(_memo) > 50000:
        _memo.clear()
    _memo[key] = result
    return result


def _search(topology: NodeTopology, numa: np.ndarray, free: tuple[int, ...], count: int, available: set[int]):
    links, pcie = topology.links, topology.pcie
    related = (
        lambda a, b: links[a, b] > 0,
        lambda a, b: pcie[a, b] <= _SWITCH,
        lambda a, b: numa[a] >= 0 and numa[a] == numa[b],
        lambda a, b: True,
    )
    idle_per_numa: dict[int, int] = {}
    for position in available:
        idle_per_numa[int(numa[position])] = idle_per_numa.get(int(numa[position]), 0) + 1
    for tier, relation in enumerate(related):
        best, best_key = None, None
        for subset in _cliques(free, count, relation):
            total = int(sum(links[a, b] for a, b in combinations(subset, 2)))
            zones = {int(numa[p]) for p in subset}
            left_behind = sum(idle_per_numa.get(zone, 0) for zone in zones) - count
            subset_key = (-total, len(zones), left_behind, subset)
            if best_key is None or subset_key < best_key:
                best, best_key = subset, subset_key
        if best is not None:
            return best, tier, -best_key[0]
    raise ValueError(f"no set of {count} among {len(free)} devices")


def _cliques(free: tuple[int, ...], count: int, related):
    """Sets of ``count`` positions of ``free`` in which every pair is ``related``, in order,
    at most ``MAX_SETS`` of them."""
    produced = 0

    def extend(chosen: list[int], options: list[int]):
        nonlocal produced
        if len(chosen) == count:
            produced += 1
            yield tuple(chosen)
            return
        for i, position in enumerate(options):
            if produced >= MAX_SETS or len(chosen) + len(options) - i < count:
                return
            yield from extend(chosen + [position], [o for o in options[i + 1 :] if related(position, o)])

    yield from extend([], sorted(free))
