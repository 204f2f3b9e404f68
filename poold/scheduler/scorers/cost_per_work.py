"""Cost per unit of work: the price of the devices divided by the job's speed on their model."""

from poold.scheduler.framework import Candidate, PlacementRequest, ScoreContext


class CostPerWork:
    """score = 100 × cheapest cost-per-work among candidates / this candidate's cost-per-work.

    Range 0..100; the cheapest candidate scores 100. Free devices (price 0) score 100.
    Example: H100 at 4.00/h with speed 2.5 costs 1.60 per unit; A100 at 2.20/h with speed 1.0
    costs 2.20; the H100 scores 100 and the A100 100 × 1.60 / 2.20 = 72.7.
    """

    name = "cost_per_work"

    def score(self, request: PlacementRequest, candidate: Candidate, context: ScoreContext) -> float:
        if candidate.cost_per_work <= 0:
            return 100.0
        return 100.0 * context.cheapest_cost_per_work / candidate.cost_per_work
