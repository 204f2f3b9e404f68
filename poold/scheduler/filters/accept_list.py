"""With an accept list, only the listed chip models qualify (chip affinity)."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import DeviceView


class AcceptList:
    name = "accept_list"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        if request.speed_on(device.model) is None:
            return Status("model_not_accepted", f"model {device.model} is not in the accept list")
        return OK
