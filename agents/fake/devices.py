"""A fake node's device files: real character devices (``mknod``) under a root of its own.

The collectors name each device's files under a ``dev_root`` (``/`` on a node); pointed at
this tree they name these, and the agent's device control (cgroup v1 ``devices.allow``, or
the v2 BPF program) allows a job exactly its own by major:minor, as on a real node. Opening
a file of a device the job was not given fails with EPERM. Opening its own fails with ENXIO
where no driver serves the number (none does on a test machine), or works where one does.

Numbers: NVIDIA GPUs ``195:<index>`` and ``nvidiactl`` ``195:255`` (the driver's own), DRM
render nodes ``226:128+<n>`` (DRM's own); the rest, whose majors a real driver takes
dynamically, get fixed majors from the range Linux hands out dynamically (234-254), below
the ones a test machine uses. The driver's ``/proc`` entries the collectors read (NVIDIA's
``nvidia-caps/mig-minors``) and the sysfs links of Intel FPGA ports are written too.
Creating device files needs root (CAP_MKNOD): elsewhere there is no tree, and the
collectors report no device files (nor can the agent make cgroups there).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from agents.collectors.base import normalize_bus_id
from agents.fake.fixture import Fixture
from agents.fake.fixture_file import device_list
from agents.fake.nvml_model import build_gpus

log = logging.getLogger(__name__)

NVIDIA, DRM = 195, 226
NVIDIA_UVM, NVIDIA_CAPS, DAVINCI, ASCEND_SHARED, KFD, XCLMGMT, DFL_PORT, DFL_FME = range(234, 242)


class _Tree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def node(self, path: str, major: int, minor: int) -> None:
        """A character device at ``path`` (as a node names it, ``/dev/nvidia0``)."""
        full = self.root / path.lstrip("/")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.unlink(missing_ok=True)
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        full.chmod(0o666)  # as the drivers' udev rules make them, whatever the umask

    def link(self, path: str, target: str) -> None:
        full = self.root / path.lstrip("/")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.unlink(missing_ok=True)
        full.symlink_to(target)

    def text(self, path: str, content: str) -> None:
        full = self.root / path.lstrip("/")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(content)


def make_device_files(fixture: Fixture, root: Path) -> Path | None:
    """Create ``fixture``'s device files under ``root``; ``root``, or None where this process
    may not create device files (it is not root)."""
    tree = _Tree(Path(root))
    try:
        tree.root.mkdir(parents=True, exist_ok=True)
        tree.root.chmod(0o755)
        _nvidia(tree, fixture)
        _ascend(tree, fixture)
        render = _render_nodes(tree, fixture, "amd", "gpus", 0)
        if render:
            tree.node("/dev/kfd", KFD, 0)
        for number, _ in enumerate(device_list(fixture.data, "xilinx", "devices")):
            tree.node(f"/dev/xclmgmt{number}", XCLMGMT, number)  # the management function: the operator's
        _render_nodes(tree, fixture, "xilinx", "devices", render)
        _intel(tree, fixture)
    except PermissionError as exc:
        log.warning("fake node %s: no device files (%s); jobs get no device control", fixture.name, exc)
        return None
    return tree.root


def _nvidia(tree: _Tree, fixture: Fixture) -> None:
    gpus = build_gpus(fixture.data)
    if not gpus:
        return
    tree.node("/dev/nvidiactl", NVIDIA, 255)
    tree.node("/dev/nvidia-uvm", NVIDIA_UVM, 0)
    tree.node("/dev/nvidia-uvm-tools", NVIDIA_UVM, 1)
    minors = ["config 1", "monitor 2"]
    cap = 3
    for gpu in gpus:
        tree.node(f"/dev/nvidia{gpu.index}", NVIDIA, gpu.index)
        for piece in gpu.slices:
            for name in (f"gpu{gpu.index}/gi{piece.gi_id}/access", f"gpu{gpu.index}/gi{piece.gi_id}/ci{piece.ci_id}/access"):
                minors.append(f"{name} {cap}")
                tree.node(f"/dev/nvidia-caps/nvidia-cap{cap}", NVIDIA_CAPS, cap)
                cap += 1
    tree.text("/proc/driver/nvidia-caps/mig-minors", "\n".join(minors) + "\n")


def _ascend(tree: _Tree, fixture: Fixture) -> None:
    npus = device_list(fixture.data, "ascend", "npus")
    for index, _ in enumerate(npus):
        tree.node(f"/dev/davinci{index}", DAVINCI, index)
    if npus:
        for number, name in enumerate(("davinci_manager", "devmm_svm", "hisi_hdc")):
            tree.node(f"/dev/{name}", ASCEND_SHARED, number)


def _render_nodes(tree: _Tree, fixture: Fixture, section: str, key: str, first: int) -> int:
    """``renderD<128+n>`` for each PCI device of ``section``, linked from ``/dev/dri/by-path``; how many."""
    devices = device_list(fixture.data, section, key)
    for offset, device in enumerate(devices):
        number = 128 + first + offset
        tree.node(f"/dev/dri/renderD{number}", DRM, number)
        tree.link(f"/dev/dri/by-path/pci-{normalize_bus_id(device['bdf'])}-render", f"../renderD{number}")
    return first + len(devices)


def _intel(tree: _Tree, fixture: Fixture) -> None:
    for number, card in enumerate(device_list(fixture.data, "intel_fpga", "devices")):
        port = tree.root / "sys/bus/pci/devices" / str(normalize_bus_id(card["bdf"])) / "fpga_region/region0" / f"dfl-port.{number}"
        port.mkdir(parents=True, exist_ok=True)
        tree.node(f"/dev/dfl-port.{number}", DFL_PORT, number)
        tree.node(f"/dev/dfl-fme.{number}", DFL_FME, number)  # the management engine: the operator's
