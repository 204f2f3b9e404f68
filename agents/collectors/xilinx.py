"""AMD/Xilinx Alveo FPGAs, read from XRT's ``xrt-smi`` (``xbutil`` before XRT 2.17).

``<tool> examine -f JSON -o FILE`` writes the system report; its ``host.devices[]`` (under
``system`` in XRT 2.x) list each card's user-function BDF, shell (``vbnv``), logic UUID and
readiness. The shell is what a job is built against, so it goes into
``attributes["fpga_shell"]`` exactly as XRT spells it; the model ("U250") comes from it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

from agents.collectors.base import normalize_bus_id, pci_numa_node, render_node_files
from agents.collectors.tool import ToolCollector, ToolOutputError
from poold_wire.records import DeviceRecord

_SHELL_MODEL = re.compile(r"^xilinx_([a-z]+\d+[a-z]*)_", re.IGNORECASE)
#: On-card memory, MiB: HBM where the card has it, else DDR (U280: 8 GiB HBM + 32 GiB DDR).
CARD_MEMORY_MIB = {"U50": 8192, "U55C": 16384, "U200": 65536, "U250": 65536, "U280": 40960}


def model_of_shell(vbnv: str) -> str | None:
    """"xilinx_u250_gen3x16_xdma_shell_4_1" -> "U250"; None for a shell it cannot read."""
    match = _SHELL_MODEL.match(vbnv)
    return match.group(1).upper() if match else None


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def parse_examine(report: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """The XRT version and the device entries of an ``examine`` JSON report."""
    host = (report.get("system") or {}).get("host") or report.get("host")
    if not isinstance(host, dict) or not isinstance(host.get("devices", []), list):
        raise ToolOutputError("the JSON report has no host.devices list")
    version = (host.get("xrt") or {}).get("version")
    return version, host.get("devices", [])


class XilinxCollector(ToolCollector):
    """Reports every Alveo card XRT lists."""

    name = "xilinx"
    tool_names = ("xrt-smi", "xbutil")

    def read(self, command: list[str]) -> tuple[list[DeviceRecord], dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="poold-xrt-") as scratch:
            path = os.path.join(scratch, "examine.json")
            self.run(command, "examine", "-f", "JSON", "-o", path)
            try:
                with open(path, encoding="utf-8") as report_file:
                    report = json.load(report_file)
            except FileNotFoundError:
                raise ToolOutputError(f"examine wrote no report to {path}") from None
            except json.JSONDecodeError as err:
                raise ToolOutputError(f"the report is not JSON ({err})") from None
        version, entries = parse_examine(report)
        devices = []
        for index, entry in enumerate(entries):
            bus_id = normalize_bus_id(str(entry.get("bdf", "")))
            shell = str(entry.get("vbnv", ""))
            if bus_id is None:
                raise ToolOutputError(f"device entry without a PCI address: {entry!r}")
            model = model_of_shell(shell)
            ready = _truthy(entry.get("is_ready", False))
            devices.append(DeviceRecord(
                uuid=f"FPGA-{bus_id}",
                vendor="xilinx",
                kind="fpga",
                model=model or (shell or "unknown")[:80],
                name=f"Alveo {model}" if model and model.startswith("U") else (model or shell),
                index=index,
                bus_id=bus_id,
                memory_total_mib=CARD_MEMORY_MIB.get(model or ""),
                numa_node=pci_numa_node(self.sysfs_root, bus_id),
                health="ok" if ready else "unhealthy",
                health_reason=None if ready else "XRT reports the card not ready (no shell loaded?)",
                attributes={
                    "fpga_shell": shell,
                    "fpga_logic_uuid": entry.get("id"),
                    "device_class": entry.get("device_class"),
                    # The user function's render node; the management function's
                    # /dev/xclmgmt<N> (flashing, resets) is the operator's, never a job's.
                    "device_files": render_node_files(self.dev_root, bus_id),
                },
            ))
        return devices, ({"xrt_version": version} if version else {})
