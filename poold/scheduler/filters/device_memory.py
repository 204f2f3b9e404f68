"""The device must have the memory the job needs free: its total, less what allocations hold,
less what processes outside poold use (unless ``scheduler.count_outside_memory`` is off).

A job that names ``memory_per_device`` needs exactly that. One that does not needs its share
of the device's memory, less 5 % of the device (``IMPLICIT_MEMORY_SLACK``: the driver's own
use, which NVML reports as used): a whole GPU with a little memory in use outside poold is
still free for a whole-GPU job; one that a foreign process fills is not.
"""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.request import PlacementRequest


class DeviceMemory:
    name = "device_memory"
    codes = ("memory_unknown", "insufficient_memory")
    static = False

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        pool = ctx.pool
        total = pool.dev_mem_total[devices]
        known = total >= 0
        if request.memory_per_device_mib is not None:
            yield "memory_unknown", known
        free = total - pool.dev_mem_held[devices]
        if ctx.options.count_outside_memory:
            free = free - pool.dev_mem_outside[devices]
        yield "insufficient_memory", ~known | (request.memory_needed(total) <= free)

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        pool = ctx.pool
        if code == "memory_unknown":
            return f"{pool.dev_uuid[device]} does not report its memory"
        total = pool.dev_mem_total[device : device + 1]
        wanted = int(request.memory_needed(total)[0])
        free = int(total[0] - pool.dev_mem_held[device])
        outside = int(pool.dev_mem_outside[device])
        used = f" ({outside / 1024:.1f} GiB used outside poold)" if outside and ctx.options.count_outside_memory else ""
        if ctx.options.count_outside_memory:
            free -= outside
        return f"{max(free, 0) / 1024:.1f} GiB free on {pool.model_name(device)}{used}, {wanted / 1024:.1f} GiB asked"
