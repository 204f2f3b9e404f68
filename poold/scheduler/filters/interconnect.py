"""``interconnect = "nvlink"``: every pair of the job's devices must be joined by NVLink."""


from poold.scheduler.candidates import TIER_NVLINK
from poold.scheduler.framework import Candidates, Context
from poold.scheduler.request import PlacementRequest


class Interconnect:
    name = "interconnect"
    codes = ("no_nvlink",)

    def check_candidates(self, request: PlacementRequest, ctx: Context, candidates: Candidates):
        if request.interconnect != "nvlink" or request.count < 2:
            return
        yield "no_nvlink", candidates.tier == TIER_NVLINK

    def explain(self, code: str, request: PlacementRequest, ctx: Context, candidates: Candidates, row: int) -> str:
        pool = ctx.pool
        model = pool.models.names[int(candidates.model[row])]
        return f"no {request.count} free {model} on {pool.node_name[int(candidates.node[row])]} are all joined by NVLink"
