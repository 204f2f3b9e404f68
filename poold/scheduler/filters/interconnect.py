"""``interconnect = "nvlink"``: every pair of the job's devices must be joined by NVLink."""

from itertools import combinations

from poold.scheduler.framework import OK, Candidate, PlacementRequest, Status


class Interconnect:
    name = "interconnect"

    def filter_candidate(self, request: PlacementRequest, candidate: Candidate) -> Status:
        if request.interconnect != "nvlink" or len(candidate.devices) < 2:
            return OK
        for first, second in combinations(candidate.devices, 2):
            if first.nvlink_to(second) == 0:
                return Status("no_nvlink", f"no {request.count} free {candidate.devices[0].model} on {candidate.node.name} are all joined by NVLink")
        return OK
