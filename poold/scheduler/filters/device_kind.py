"""The device must be of a kind the job asks for (gpu, npu, fpga; ``any`` is all three)."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.pool import KINDS
from poold.scheduler.request import PlacementRequest


class DeviceKind:
    name = "device_kind"
    codes = ("wrong_kind",)
    static = True

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        wanted = [KINDS.index(kind) for kind in request.kinds]
        yield "wrong_kind", np.isin(ctx.pool.dev_kind[devices], wanted)

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        kind = KINDS[ctx.pool.dev_kind[device]]
        return f"{kind} not asked ({'/'.join(sorted(request.kinds))})"
