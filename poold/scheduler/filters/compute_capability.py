"""A minimum CUDA compute capability ("8.0") excludes older GPUs and non-NVIDIA devices."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import DeviceView


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


class ComputeCapability:
    name = "compute_capability"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        if request.compute_capability is None:
            return OK
        if device.compute_capability is None:
            return Status("no_compute_capability", f"{device.model} has no CUDA compute capability")
        if _version(device.compute_capability) < _version(request.compute_capability):
            return Status(
                "compute_capability_too_low",
                f"{device.model} has compute capability {device.compute_capability}, {request.compute_capability} asked",
            )
        return OK
