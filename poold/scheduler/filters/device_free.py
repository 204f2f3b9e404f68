"""The device must be free: whole for whole-device jobs, or with enough share left for a fraction.

Only GPUs that are not MIG slices are shared fractionally; NPUs, FPGAs and slices go whole.
"""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import EPSILON, DeviceView


class DeviceFree:
    name = "device_free"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        if not request.fractional:
            if not device.whole_free:
                return Status("device_busy", f"{device.uuid} is in use ({1 - device.free_share:.2f} held)")
            return OK
        if device.kind != "gpu" or device.mig_profile is not None:
            return Status("not_shareable", f"{device.kind} {device.uuid} cannot be shared fractionally")
        if device.free_share + EPSILON < request.share:
            return Status("insufficient_share", f"{device.free_share:.2f} of {device.uuid} free, {request.share:.2f} asked")
        return OK
