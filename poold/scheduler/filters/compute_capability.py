"""A minimum CUDA compute capability ("8.0") excludes older GPUs and non-NVIDIA devices."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.pool import cc_number
from poold.scheduler.request import PlacementRequest


def _text(number: int) -> str:
    return f"{number // 1000}.{number % 1000}"


class ComputeCapability:
    name = "compute_capability"
    codes = ("no_compute_capability", "compute_capability_too_low")
    static = True

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        if request.compute_capability is None:
            return
        capability = ctx.pool.dev_cc[devices]
        yield "no_compute_capability", capability >= 0
        yield "compute_capability_too_low", capability >= cc_number(request.compute_capability)

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        model = ctx.pool.model_name(device)
        if code == "no_compute_capability":
            return f"{model} has no CUDA compute capability"
        return f"{model} has compute capability {_text(int(ctx.pool.dev_cc[device]))}, {request.compute_capability} asked"
