"""Locality for multi-device jobs: NVLink between every pair, and one NUMA node."""

from itertools import combinations

from poold.scheduler.framework import Candidate, PlacementRequest, ScoreContext


class Locality:
    """score = 70 × (pairs joined by NVLink / pairs) + 30 × (1 if all devices share a NUMA node).

    Range 0..100; single-device candidates score 100. Example: 4 GPUs, all pairs on NVLink,
    two on NUMA 0 and two on NUMA 1: 70 × 6/6 + 0 = 70.
    """

    name = "locality"

    def score(self, request: PlacementRequest, candidate: Candidate, context: ScoreContext) -> float:
        devices = candidate.devices
        if len(devices) < 2:
            return 100.0
        pairs = list(combinations(devices, 2))
        linked = sum(1 for first, second in pairs if first.nvlink_to(second) > 0)
        numa = {device.numa_node for device in devices}
        same_numa = len(numa) == 1 and None not in numa
        return 70.0 * linked / len(pairs) + (30.0 if same_numa else 0.0)
