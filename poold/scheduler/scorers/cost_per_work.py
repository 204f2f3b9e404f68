"""Cost per unit of work: the price of the devices divided by the job's speed on their model."""

import numpy as np

from poold.scheduler.framework import Candidates, Context
from poold.scheduler.request import PlacementRequest


class CostPerWork:
    """raw = −(price per hour / speed): the cost per unit of work, negated (higher is better).

    score = 100 × cheapest / raw, and 100 for every candidate within ``cost_tolerance`` of the
    cheapest (default 5 %): placements of near-equal cost are equal here, so the packing
    scorers decide between them. Free candidates (price 0) score 100. Range 0..100.
    Example: H100 at 4.00/h with speed 2.5 costs 1.60 per unit; A100 at 2.20/h with speed 1.0
    costs 2.20; the H100 scores 100 and the A100 100 × 1.60 / 2.20 = 72.7. With a 5 % band, a
    candidate at 1.66 (1.60 × 1.0375) also scores 100.
    """

    name = "cost_per_work"

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        return -candidates.cost_per_work

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        cost = -raw
        cheapest, dearest = float(cost.min()), float(cost.max())
        if dearest <= cheapest * (1.0 + ctx.options.cost_tolerance) + 1e-12:
            return np.full(len(raw), 100.0)  # all within the band (a pool priced alike)
        band = cheapest * (1.0 + ctx.options.cost_tolerance) + 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(cost <= band, 100.0, 100.0 * cheapest / cost)
