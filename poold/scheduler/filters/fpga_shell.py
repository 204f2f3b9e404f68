"""An FPGA job is built against one shell (Xilinx) or PR interface id (Intel): it must match exactly."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import DeviceView


class FpgaShell:
    name = "fpga_shell"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        if request.fpga_shell is None or device.kind != "fpga":
            return OK
        shell = device.attributes.get("fpga_shell")
        if shell != request.fpga_shell:
            return Status("wrong_fpga_shell", f"{device.uuid} has shell {shell or 'unknown'}, {request.fpga_shell} asked")
        return OK
