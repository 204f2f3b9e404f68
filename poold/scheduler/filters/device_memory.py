"""The device must have the memory the job asks for free (by what allocations hold, in MiB)."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import DeviceView


class DeviceMemory:
    name = "device_memory"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        wanted = request.memory_to_hold(device)
        if wanted is None or wanted == 0:
            return OK
        free = device.memory_free_mib
        if free is None:
            if request.memory_per_device_mib is not None:
                return Status("memory_unknown", f"{device.uuid} does not report its memory")
            return OK
        if wanted > free:
            return Status("insufficient_memory", f"{free / 1024:.1f} GiB free on {device.model}, {wanted / 1024:.1f} GiB asked")
        return OK
