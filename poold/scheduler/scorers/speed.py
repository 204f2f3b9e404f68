"""Speed: how fast the job runs on the candidate's model, from the accept list."""

import numpy as np

from poold.scheduler.framework import Candidates, Context
from poold.scheduler.request import PlacementRequest


class Speed:
    """raw = the job's speed on the model; score = 100 × raw / fastest among candidates.

    Range 0..100. Example: H100 at speed 2.5 and A100 at 1.0: 100 and 40.
    """

    name = "speed"

    def raw(self, request: PlacementRequest, ctx: Context, candidates: Candidates) -> np.ndarray:
        return candidates.speed

    def normalize(self, request: PlacementRequest, ctx: Context, raw: np.ndarray) -> np.ndarray:
        return 100.0 * raw / float(raw.max())
