"""A job's maximum price per hour excludes candidates whose devices cost more in total."""


from poold.scheduler.framework import Candidates, Context
from poold.scheduler.request import PlacementRequest


class MaxPrice:
    name = "max_price"
    codes = ("too_expensive",)

    def check_candidates(self, request: PlacementRequest, ctx: Context, candidates: Candidates):
        if request.max_price_per_hour is None:
            return
        yield "too_expensive", candidates.price <= request.max_price_per_hour + 1e-9

    def explain(self, code: str, request: PlacementRequest, ctx: Context, candidates: Candidates, row: int) -> str:
        model = ctx.pool.models.names[int(candidates.model[row])]
        return (
            f"{request.count}x {model} costs {float(candidates.price[row]):.2f}/h, "
            f"at most {request.max_price_per_hour:.2f}/h allowed"
        )
