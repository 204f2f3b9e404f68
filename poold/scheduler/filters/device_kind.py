"""The device must be of a kind the job asks for (gpu, npu, fpga; ``any`` is all three)."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import DeviceView


class DeviceKind:
    name = "device_kind"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        if device.kind not in request.kinds:
            return Status("wrong_kind", f"{device.kind} not asked ({'/'.join(sorted(request.kinds))})")
        return OK
