"""Intel FPGA accelerator cards (PAC, OFS), read from OPAE's ``fpgainfo fme``.

``fpgainfo fme`` prints one block of ``Key : Value`` lines per FPGA management engine:
``PCIe s:b:d.f``, ``Device Id``, ``Bitstream Id``, ``Pr Interface Id``... The PR interface
id plays the role of a shell (an accelerator function must match it), so it goes into
``attributes["fpga_shell"]``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agents.collectors.base import device_files, normalize_bus_id, pci_numa_node
from agents.collectors.tool import ToolCollector, ToolOutputError
from poold_wire.records import DeviceRecord

#: PCI device id -> board, for Intel's programmable acceleration cards.
BOARDS = {0x09C4: "PAC A10", 0x0B2B: "PAC D5005", 0x0B30: "PAC N3000"}
_NO_DEVICES = re.compile(r"no (fpga|suitable|matching)", re.IGNORECASE)


def parse_fme(text: str) -> list[dict[str, str]]:
    """One ``Key -> Value`` dict per FME block that names a PCI address."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().startswith("//") and "FME" in line:
            current = {}
            blocks.append(current)
            continue
        key, sep, value = line.partition(" : ")
        if not sep:
            key, sep, value = line.partition(":")
        if sep and current is not None:
            current[key.strip()] = value.strip()
    found = [block for block in blocks if "PCIe s:b:d.f" in block]
    if not found and not _NO_DEVICES.search(text):
        raise ToolOutputError("no FME block with a 'PCIe s:b:d.f' line")
    return found


def port_device_files(sysfs_root: str | None, dev_root: str | None, bus_id: str) -> list[str]:
    """The card's accelerator port, the file a job programs and uses its AFU through:
    ``/dev/dfl-port.<N>`` (DFL driver) or ``/dev/intel-fpga-port.<N>`` (older OPAE driver),
    found under the card's sysfs directory. The management engine (``dfl-fme``,
    ``intel-fpga-fme``: partial reconfiguration of the FIU, flashing) is never a job's."""
    if sysfs_root is None:
        return []
    card = Path(sysfs_root) / "bus/pci/devices" / bus_id
    ports = sorted(card.glob("fpga_region/region*/dfl-port.*")) + sorted(card.glob("intel-fpga-port.*"))
    return device_files(dev_root, *(f"/dev/{port.name}" for port in ports))


class IntelFpgaCollector(ToolCollector):
    """Reports every FPGA OPAE's ``fpgainfo`` lists."""

    name = "intel-fpga"
    tool_names = ("fpgainfo",)

    def read(self, command: list[str]) -> tuple[list[DeviceRecord], dict[str, Any]]:
        devices = []
        for index, block in enumerate(parse_fme(self.run(command, "fme"))):
            bus_id = normalize_bus_id(block["PCIe s:b:d.f"])
            if bus_id is None:
                raise ToolOutputError(f"not a PCI address: {block['PCIe s:b:d.f']!r}")
            try:
                device_id = int(block.get("Device Id", ""), 16)
            except ValueError:
                device_id = None
            board = BOARDS.get(device_id) if device_id is not None else None
            model = board or (f"FPGA {device_id:#06x}" if device_id is not None else "FPGA")
            devices.append(DeviceRecord(
                uuid=f"FPGA-{bus_id}",
                vendor="intel",
                kind="fpga",
                model=model,
                name=f"Intel {model}",
                index=index,
                bus_id=bus_id,
                numa_node=pci_numa_node(self.sysfs_root, bus_id),
                attributes={
                    "fpga_shell": block.get("Pr Interface Id"),
                    "bitstream_id": block.get("Bitstream Id"),
                    "bitstream_version": block.get("Bitstream Version"),
                    "pci_device_id": block.get("Device Id"),
                    "socket_id": block.get("Socket Id"),
                    "device_files": port_device_files(self.sysfs_root, self.dev_root, bus_id),
                },
            ))
        return devices, {}
