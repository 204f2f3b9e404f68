"""Best fit: put the job where it leaves the least stranded capacity."""

from poold.scheduler.framework import Candidate, PlacementRequest, ScoreContext


class BestFit:
    """Range 0..100, higher means a tighter fit.

    Fractional jobs: the share of the device in use after placing, × 100 (a half-used GPU
    that the job fills scores 100; an idle one 50 for a 0.5 share). Whole devices: the
    fraction of the node's allocatable devices in use after placing, × 100, so jobs go to
    busy nodes and whole nodes stay free for large jobs.
    Example: 1 device on a node with 8 free of 8 scores 100 × 1/8 = 12.5; on a node with
    1 free of 2 it scores 100 × 2/2 = 100.
    """

    name = "best_fit"

    def score(self, request: PlacementRequest, candidate: Candidate, context: ScoreContext) -> float:
        if request.fractional:
            device = candidate.devices[0]
            return 100.0 * (1.0 - device.free_share + request.share)
        allocatable = [d for d in candidate.node.devices if not d.has_slices and d.kind in request.kinds]
        if not allocatable:
            return 0.0
        busy = sum(1 for d in allocatable if not d.whole_free)
        return 100.0 * (busy + len(candidate.devices)) / len(allocatable)
