"""A job's maximum price per hour excludes candidates whose devices cost more in total."""

from poold.scheduler.framework import OK, Candidate, PlacementRequest, Status


class MaxPrice:
    name = "max_price"

    def filter_candidate(self, request: PlacementRequest, candidate: Candidate) -> Status:
        if request.max_price_per_hour is not None and candidate.price_per_hour > request.max_price_per_hour + 1e-9:
            return Status(
                "too_expensive",
                f"{len(candidate.devices)}x {candidate.devices[0].model} costs {candidate.price_per_hour:.2f}/h, "
                f"at most {request.max_price_per_hour:.2f}/h allowed",
            )
        return OK
