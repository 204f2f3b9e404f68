"""An FPGA job is built against one shell (Xilinx) or PR interface id (Intel): it must match exactly."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.pool import KINDS
from poold.scheduler.request import PlacementRequest

FPGA = KINDS.index("fpga")


class FpgaShell:
    name = "fpga_shell"
    codes = ("wrong_fpga_shell",)
    static = True

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        if request.fpga_shell is None:
            return
        pool = ctx.pool
        # Only FPGAs carry a shell; other kinds (with kind = "any") are not judged here.
        yield "wrong_fpga_shell", (pool.dev_kind[devices] != FPGA) | (pool.dev_shell[devices] == pool.shells.find(request.fpga_shell))

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        shell = int(ctx.pool.dev_shell[device])
        name = ctx.pool.shells.names[shell] if shell >= 0 else "unknown"
        return f"{ctx.pool.dev_uuid[device]} has shell {name}, {request.fpga_shell} asked"
