"""With an accept list, only the listed chip models qualify (chip affinity)."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.request import PlacementRequest


class AcceptList:
    name = "accept_list"
    codes = ("model_not_accepted",)
    static = True

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        if not request.accept:
            return
        codes = [ctx.pool.models.find(model) for model, _ in request.accept]
        yield "model_not_accepted", np.isin(ctx.pool.dev_model[devices], codes)

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        return f"model {ctx.pool.model_name(device)} is not in the accept list"
