"""Locality for multi-device jobs: how closely the candidate's devices are connected."""

import numpy as np

from poold.scheduler.framework import Candidates, Context
from poold.scheduler.request import PlacementRequest

# Score of each tier of ``poold.scheduler.candidates``: NVLink, one PCIe switch, one NUMA node, spread.
TIER_SCORES = np.array([100.0, 70.0, 40.0, 0.0])


class Locality:
    """raw = score = 100 when every pair of devices is on NVLink, 70 under one PCIe switch,
    40 on one NUMA node, 0 spread over the node. Single devices and CPU-only jobs score 100.

    Range 0..100, absolute (not relative to the other candidates). Example: 4 GPUs of an HGX
    board (NVSwitch) score 100; 4 PCIe L4s on one NUMA node but two switches score 40.
    """

    name = "locality"

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        return TIER_SCORES[candidates.tier.astype(np.int64)]

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        return raw
