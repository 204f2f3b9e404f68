"""The device must be free: whole for whole-device jobs, or with enough share left for a fraction.

Only GPUs that are not MIG slices are shared fractionally; NPUs, FPGAs and slices go whole.
"""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.pool import EPSILON, KINDS
from poold.scheduler.request import PlacementRequest

GPU = KINDS.index("gpu")


class DeviceFree:
    name = "device_free"
    codes = ("device_busy", "not_shareable", "insufficient_share")
    static = False

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        pool = ctx.pool
        free = pool.dev_free[devices]
        if not request.fractional:
            yield "device_busy", free >= 1 - EPSILON
            return
        yield "not_shareable", (pool.dev_kind[devices] == GPU) & (pool.dev_profile[devices] < 0)
        yield "insufficient_share", free + EPSILON >= request.share

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        pool, uuid = ctx.pool, ctx.pool.dev_uuid[device]
        free = float(pool.dev_free[device])
        if code == "device_busy":
            return f"{uuid} is in use ({1 - free:.2f} held)"
        if code == "not_shareable":
            return f"{KINDS[pool.dev_kind[device]]} {uuid} cannot be shared fractionally"
        return f"{free:.2f} of {uuid} free, {request.share:.2f} asked"
