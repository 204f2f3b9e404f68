"""Huawei Ascend NPUs, read from ``npu-smi info`` (no Python binding is published).

``npu-smi info`` prints a boxed table: per NPU a line ``| id name | health | power temp
hugepages |``, then one line per chip ``| chip | bus id | AI core % memory HBM |`` with
usages as ``used / total`` MB, then a process table. The columns of the third cell are
read from the table's own header lines, so boards that show DDR and HBM separately and
boards with no HBM column parse alike. ``npu-smi info -l`` gives serial numbers, read once.

Each chip is one device: uuid ``NPU-<bus id>`` (stable across reboots; unique on a node),
model the chip family ("910B" for a ``910B2C``), ``attributes["npu_chip"]`` the full chip
name. Health ``OK`` and ``Warning`` (a minor alarm) count as ok; anything else is unhealthy.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from agents.collectors.base import device_files, log_once, normalize_bus_id, pci_numa_node
from agents.collectors.tool import ToolCollector, ToolError, ToolOutputError
from poold_wire.records import DeviceRecord

log = logging.getLogger(__name__)

_FIELD = re.compile(r"\d+\s*/\s*\d+|\S+")
_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
_NO_PROCESSES = re.compile(r"No running processes found in NPU (\d+)")
_MODEL = re.compile(r"^(\d{3}[A-Z]?)")
HEALTHY_STATES = ("OK", "Warning")
# Files every Ascend process opens besides its chip's own /dev/davinci<N>.
ASCEND_SHARED_FILES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")


def npu_device_files(dev_root: str | None, index: int) -> list[str]:
    """A chip's device files: ``/dev/davinci<index>`` (its logical id, as
    ``ASCEND_RT_VISIBLE_DEVICES`` numbers it) and the driver's shared ones."""
    return device_files(dev_root, f"/dev/davinci{index}", *ASCEND_SHARED_FILES)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None  # "NA", "-"


def _pair(text: str | None) -> tuple[int, int] | None:
    match = _PAIR.fullmatch(text.strip()) if text else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def _column(values: dict[str, str], prefix: str) -> str | None:
    return next((v for k, v in values.items() if k.startswith(prefix)), None)


def parse_info(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The driver version and one dict per chip from ``npu-smi info`` output."""
    version = None
    npu_columns = ["Power(W)", "Temp(C)", "Hugepages-Usage(page)"]
    chip_columns = ["AICore(%)", "Memory-Usage(MB)", "HBM-Usage(MB)"]
    chips: list[dict[str, Any]] = []
    npu: dict[str, Any] | None = None
    in_processes = False
    for line in text.splitlines():
        if not line.strip().startswith("|"):
            continue
        cells = _cells(line)
        first = cells[0]
        if first.startswith("npu-smi"):
            match = re.search(r"Version:\s*(\S+)", line)
            version = match.group(1) if match else None
        elif first.startswith("NPU") and len(cells) > 1 and cells[1].startswith("Process id"):
            in_processes = True
        elif first.startswith("NPU") and "Name" in first:
            npu_columns = cells[2].split() if len(cells) > 2 else npu_columns
        elif first.startswith("Chip") and len(cells) > 1 and cells[1].startswith("Bus-Id"):
            chip_columns = cells[2].split() if len(cells) > 2 else chip_columns
        elif in_processes:
            _add_process(chips, cells)
        elif len(cells) >= 3 and normalize_bus_id(cells[1]):
            if npu is None:
                raise ToolOutputError(f"a chip line comes before any NPU line: {line.strip()!r}")
            chip_id = first.split()[0] if first.split() else ""
            values = dict(zip(chip_columns, _FIELD.findall(cells[2])))
            chips.append({**npu, "chip_id": int(chip_id) if chip_id.isdigit() else None,
                          "bus_id": normalize_bus_id(cells[1]), "chip_values": values, "processes": []})
        elif len(cells) >= 3 and len(first.split()) >= 2 and first.split()[0].isdigit():
            npu_id, name = first.split()[:2]
            npu = {"npu_id": int(npu_id), "chip_name": name, "health": cells[1],
                   "npu_values": dict(zip(npu_columns, _FIELD.findall(cells[2])))}
    if not chips:
        raise ToolOutputError("no NPU rows found in `npu-smi info`")
    return version, chips


def _add_process(chips: list[dict[str, Any]], cells: list[str]) -> None:
    if _NO_PROCESSES.match(cells[0]) or len(cells) < 4:
        return
    ids = cells[0].split()
    if len(ids) < 2 or not (ids[0].isdigit() and ids[1].isdigit() and cells[1].isdigit()):
        return
    for chip in chips:
        if chip["npu_id"] == int(ids[0]) and chip["chip_id"] == int(ids[1]):
            chip["processes"].append({"pid": int(cells[1]), "name": cells[2],
                                      "used_memory_mib": int(_number(cells[3]) or 0)})


def parse_list(text: str) -> dict[int, dict[str, str]]:
    """``npu-smi info -l``: NPU id -> its ``Key : Value`` lines (Serial Number, Chip Count...)."""
    npus: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "NPU ID" and value.isdigit():
            current = npus.setdefault(int(value), {})
        elif current is not None:
            current[key] = value
    return npus


class AscendCollector(ToolCollector):
    """Reports every Ascend NPU chip ``npu-smi`` lists."""

    name = "ascend"
    tool_names = ("npu-smi",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._serials: dict[int, dict[str, str]] | None = None

    def _board_facts(self, command: list[str]) -> dict[int, dict[str, str]]:
        """Serial numbers and product names; they do not change, so ``-l`` runs once."""
        if self._serials is None:
            try:
                self._serials = parse_list(self.run(command, "info", "-l"))
            except ToolError as err:
                log_once(log, logging.WARNING, "npu-smi-list", "npu-smi info -l failed, no serials: %s", err)
                self._serials = {}
        return self._serials

    def read(self, command: list[str]) -> tuple[list[DeviceRecord], dict[str, Any]]:
        version, chips = parse_info(self.run(command, "info"))
        boards = self._board_facts(command)
        devices = []
        for index, chip in enumerate(chips):
            npu_values, chip_values = chip["npu_values"], chip["chip_values"]
            hbm = _pair(_column(chip_values, "HBM"))
            memory = hbm if hbm and hbm[1] > 0 else _pair(_column(chip_values, "Memory"))
            healthy = chip["health"] in HEALTHY_STATES
            model = _MODEL.match(chip["chip_name"])
            board = boards.get(chip["npu_id"], {})
            devices.append(DeviceRecord(
                uuid=f"NPU-{chip['bus_id']}",
                vendor="huawei",
                kind="npu",
                model=model.group(1) if model else chip["chip_name"],
                name=f"Ascend {chip['chip_name']}",
                index=index,
                bus_id=chip["bus_id"],
                memory_total_mib=memory[1] if memory else None,
                memory_free_mib=max(memory[1] - memory[0], 0) if memory else None,
                power_w=_number(_column(npu_values, "Power")),
                temperature_c=_number(_column(npu_values, "Temp")),
                utilization_pct=_number(_column(chip_values, "AICore")),
                numa_node=pci_numa_node(self.sysfs_root, chip["bus_id"]),
                health="ok" if healthy else "unhealthy",
                health_reason=None if healthy else f"npu-smi reports health {chip['health']}",
                attributes={
                    "npu_chip": chip["chip_name"],
                    "npu_id": chip["npu_id"],
                    "chip_id": chip["chip_id"],
                    "npu_health": chip["health"],
                    "hbm": hbm is not None and hbm[1] > 0,
                    "serial": board.get("Serial Number") or None,
                    "processes": chip["processes"],
                    "device_files": npu_device_files(self.dev_root, index),
                },
            ))
        return devices, ({"npu_driver_version": version} if version else {})
