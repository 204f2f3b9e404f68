"""Unhealthy devices (XID, lost, vendor health alarm) take no jobs."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.request import PlacementRequest


class DeviceHealth:
    name = "device_health"
    codes = ("device_unhealthy",)
    static = False

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        yield "device_unhealthy", ctx.pool.dev_healthy[devices]

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        reason = ctx.pool.dev_health_reason[device] or "no reason given"
        return f"{ctx.pool.dev_uuid[device]} is unhealthy: {reason}"
