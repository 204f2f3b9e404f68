"""Speed: how fast the job runs on the candidate's model, from the accept list."""

from poold.scheduler.framework import Candidate, PlacementRequest, ScoreContext


class Speed:
    """score = 100 × speed on this candidate / fastest speed among candidates. Range 0..100."""

    name = "speed"

    def score(self, request: PlacementRequest, candidate: Candidate, context: ScoreContext) -> float:
        return 100.0 * candidate.speed / context.fastest_speed
