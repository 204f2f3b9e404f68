"""Candidate generation for gangs: the best-connected set by exact search, in tiers.

Positions are a node's devices 0..k-1. ``links`` lists NVLink pairs, ``switch`` groups of
devices under one PCIe switch, ``numa`` each device's NUMA node.
"""

from __future__ import annotations

from itertools import combinations

import pytest

from poold.scheduler.candidates import TIER_ANY, TIER_NUMA, TIER_NVLINK, TIER_SWITCH, best_gang
from poold.scheduler.pool import ColumnarPool, DeviceSpec, NodeSpec


def node(count: int, links=(), switch=(), numa=None) -> tuple:
    """A node of ``count`` GPUs with these NVLink pairs (12 links each) and PCIe switch groups;
    returns its topology and NUMA column."""
    uuids = [f"GPU-{i}" for i in range(count)]
    nvlink = {i: [] for i in range(count)}
    for a, b in links:
        nvlink[a].append((uuids[b], 12))
        nvlink[b].append((uuids[a], 12))
    pcie = {i: [] for i in range(count)}
    for group in switch:
        for a, b in combinations(group, 2):
            pcie[a].append((uuids[b], "single_switch"))
            pcie[b].append((uuids[a], "single_switch"))
    for a, b in combinations(range(count), 2):
        if not any(a in g and b in g for g in switch):
            pcie[a].append((uuids[b], "system"))
            pcie[b].append((uuids[a], "system"))
    numa = numa or [0] * count
    pool = ColumnarPool()
    devices = [DeviceSpec(id=i + 1, uuid=uuids[i], kind="gpu", model="X", index=i, numa_node=numa[i],
                          nvlink=tuple(nvlink[i]), pcie=tuple(pcie[i])) for i in range(count)]
    pool.upsert_node(NodeSpec(id=1, name="n", cpu_cores=8, memory_total_mib=1024), devices)
    return pool.node_topology[0], pool.dev_numa[:count]


@pytest.mark.parametrize(
    ("layout", "free", "count", "tier", "chosen"),
    [
        # all pairs on NVLink (NVSwitch board): any 4; the one NUMA half with the lowest positions
        (dict(count=8, links=list(combinations(range(8), 2)), numa=[0, 0, 0, 0, 1, 1, 1, 1]), range(8), 4, TIER_NVLINK, (0, 1, 2, 3)),
        # a triangle 1-2-3 on NVLink and 0 linked to 1 only: greedy from 0 would take 0,1 and then
        # fail NVLink; the exact search finds the triangle
        (dict(count=4, links=[(0, 1), (1, 2), (2, 3), (1, 3)]), range(4), 3, TIER_NVLINK, (1, 2, 3)),
        # no NVLink; 2 and 3 share a PCIe switch
        (dict(count=4, switch=[(2, 3)]), range(4), 2, TIER_SWITCH, (2, 3)),
        # no NVLink, no common switch; 1 and 3 on NUMA 1
        (dict(count=4, numa=[0, 1, 2, 1]), range(4), 2, TIER_NUMA, (1, 3)),
        (dict(count=4, numa=[0, 1, 2, 3]), range(4), 2, TIER_ANY, (0, 1)),
        # busy devices are out: NVLink pairs (0,1) and (2,3), device 1 busy -> the pair 2,3
        (dict(count=4, links=[(0, 1), (2, 3)]), (0, 2, 3), 2, TIER_NVLINK, (2, 3)),
    ],
)
def test_best_gang_is_exact_and_tiered(layout, free, count, tier, chosen):
    topology, numa = node(**layout)
    positions, found_tier, _ = best_gang(topology, numa, tuple(free), count, tuple(free))
    assert (positions, found_tier) == (chosen, tier)


def test_best_gang_keeps_a_whole_numa_half_free():
    # 8 NVSwitch GPUs, NUMA 0 for 0-3 and 1 for 4-7; 0 and 1 are busy. A 2-GPU gang could take
    # (2,3) on NUMA 0, leaving NUMA 1 whole (4 idle), or split NUMA 1. Idle devices left behind in
    # the NUMA nodes it touches: (2,3) -> 2 + 0 = 2 - 2 = 0; (4,5) -> 4 - 2 = 2: it takes (2,3).
    topology, numa = node(count=8, links=list(combinations(range(8), 2)), numa=[0, 0, 0, 0, 1, 1, 1, 1])
    free = (2, 3, 4, 5, 6, 7)
    positions, tier, links = best_gang(topology, numa, free, 2, free)
    assert positions == (2, 3) and tier == TIER_NVLINK and links == 12


def test_a_large_node_is_searched_within_bounds():
    topology, numa = node(count=16, links=list(combinations(range(16), 2)), numa=[i // 8 for i in range(16)])
    free = tuple(range(16))
    positions, tier, _ = best_gang(topology, numa, free, 8, free)
    assert tier == TIER_NVLINK and len(set(numa[list(positions)].tolist())) == 1

