"""What every device collector is: a name and a ``collect()`` that never raises for the hardware.

A collector turns one vendor's answers into :class:`poold_wire.records.DeviceRecord` values.
Its ``status`` says how it fared: ``"ok"``, ``"absent: <why>"`` (the vendor's library or
tool is not on this node: normal on most nodes) or ``"error: <why>"`` (present but
failing). One collector's failure never stops the others: :func:`agents.inventory.collect`
runs each on its own, and a collector itself reports a device it cannot read as
``health="unhealthy"`` rather than failing the whole pass.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from poold_wire.records import DeviceRecord, HostRecord

MIB = 1024 * 1024

_logged: set[str] = set()
_logged_lock = threading.Lock()


@dataclass
class CollectorResult:
    """One collector's answer.

    ``host_attributes`` are merged into the node's ``HostRecord.attributes`` (for example
    ``driver_version``, ``cuda_version``); ``host`` is set by the host collector only.
    """

    devices: list[DeviceRecord] = field(default_factory=list)
    host_attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    host: HostRecord | None = None

    @classmethod
    def absent(cls, why: str) -> "CollectorResult":
        return cls(status=f"absent: {why}")

    @classmethod
    def error(cls, why: str) -> "CollectorResult":
        return cls(status=f"error: {why}")


@runtime_checkable
class Collector(Protocol):
    """One source of devices. ``collect()`` reports failures in the result's status."""

    name: str

    def collect(self) -> CollectorResult: ...


class UnavailableCollector:
    """Stands in for a collector that could not be built; reports the same status each time."""

    def __init__(self, name: str, status: str):
        self.name = name
        self.status = status

    def collect(self) -> CollectorResult:
        return CollectorResult(status=self.status)

    def __repr__(self) -> str:
        return f"UnavailableCollector({self.name!r}, {self.status!r})"


def log_once(logger: logging.Logger, level: int, key: str, message: str, *args: Any) -> None:
    """Log ``message`` the first time ``key`` is seen in this process, never again."""
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.log(level, message, *args)


def describe(err: BaseException) -> str:
    """``"NVMLError_GpuIsLost: GPU is lost"``-style text for a status or a reason."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def normalize_bus_id(bus_id: str | bytes | None) -> str | None:
    """A PCI address in sysfs form, ``dddd:bb:dd.f`` in lower case; None if not one.

    NVML says ``00000000:17:00.0``, npu-smi ``0000:C1:00.0``, some tools ``3b:00.0``.
    """
    if bus_id is None:
        return None
    text = (bus_id.decode() if isinstance(bus_id, bytes) else bus_id).strip().strip("[]")
    match = _BUS_ID.match(text)
    if match is None:
        return None
    domain, bus, device, function = match.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"


def pci_numa_node(sysfs_root: str | None, bus_id: str | None) -> int | None:
    """The NUMA node sysfs gives a PCI device, or None (no sysfs, no node, ``-1``)."""
    if sysfs_root is None or bus_id is None:
        return None
    try:
        node = int((Path(sysfs_root) / "bus/pci/devices" / bus_id / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def device_files(dev_root: str | None, *paths: str) -> list[str]:
    """Which of ``paths`` (device files as a node names them: ``/dev/nvidia0``) exist under
    ``dev_root`` (``/`` on a node; the fake harness's own tree in tests), as paths to open.

    Each collector names its devices' files (``attributes["device_files"]``) with this: they
    are what a job on the device may open when the agent limits device files
    (``agents.isolation``). None for ``dev_root``: report none.
    """
    if dev_root is None:
        return []
    found = []
    for path in paths:
        full = os.path.join(dev_root, path.lstrip("/"))
        if os.path.exists(full) and full not in found:
            found.append(full)
    return found


def render_node_files(dev_root: str | None, bus_id: str | None, *shared: str) -> list[str]:
    """A PCI device's DRM render node (``/dev/dri/by-path/pci-<bus id>-render``, a link to
    its ``renderD<N>``) and the ``shared`` files; none without a bus id. AMD GPUs need
    ``/dev/kfd`` besides; Alveo cards (XRT's xocl driver) need nothing else."""
    if bus_id is None:
        return []
    return device_files(dev_root, f"/dev/dri/by-path/pci-{bus_id}-render", *shared)
