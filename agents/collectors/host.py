"""The node itself: hostname, CPUs, memory, load and NUMA layout, through psutil and sysfs.

Static facts (OS, kernel, NUMA layout, agent version) are read once when the collector is
built; memory, load and hostname on every pass. With a fake fixture's ``[node]`` table the
collector reports that node instead of this machine.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from agents.collectors.base import MIB, CollectorResult
from poold_wire.records import HostRecord


def parse_cpulist(text: str) -> list[int]:
    """CPU ids of a kernel cpulist: "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def read_numa_nodes(sysfs_root: str | None = "/sys") -> dict[str, list[int]]:
    """NUMA node id -> CPU ids from ``<sysfs>/devices/system/node``; empty where absent."""
    if sysfs_root is None:
        return {}
    nodes: dict[str, list[int]] = {}
    for node_dir in sorted(Path(sysfs_root, "devices/system/node").glob("node[0-9]*")):
        try:
            nodes[node_dir.name.removeprefix("node")] = parse_cpulist((node_dir / "cpulist").read_text())
        except (OSError, ValueError):
            continue
    return dict(sorted(nodes.items(), key=lambda item: int(item[0])))


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME") or platform.system()
    except OSError:
        return platform.platform()


def _agent_version() -> str | None:
    try:
        return metadata.version("poold")
    except metadata.PackageNotFoundError:
        return None


def _numa_from_fixture(nodes: Mapping[str, Any]) -> dict[str, list[int]]:
    out = {}
    for node_id, cpus in nodes.items():
        out[str(node_id)] = parse_cpulist(cpus) if isinstance(cpus, str) else [int(c) for c in cpus]
    return out


class HostCollector:
    """Reports the node as a :class:`~poold_wire.records.HostRecord` (in ``result.host``)."""

    name = "host"

    def __init__(self, node: Mapping[str, Any] | None = None, *, sysfs_root: str | None = "/sys"):
        """``node``: a fake fixture's ``[node]`` table to report instead of this machine."""
        self._node = dict(node) if node is not None else None
        self._static = self._static_attributes()
        if self._node is not None:
            self._numa = _numa_from_fixture(self._node.get("numa_nodes") or {})
        else:
            self._numa = read_numa_nodes(sysfs_root)

    def _static_attributes(self) -> dict[str, Any]:
        node = self._node
        attributes: dict[str, Any] = {"agent_version": _agent_version()}
        if node is None:
            attributes.update(os=_os_name(), kernel=platform.release(), arch=platform.machine(),
                              cpu_physical_cores=psutil.cpu_count(logical=False))
        else:
            attributes.update(os=node.get("os"), kernel=node.get("kernel"), arch=node.get("arch", "x86_64"),
                              cpu_physical_cores=node.get("cpu_physical_cores"), fake=True)
        return {k: v for k, v in attributes.items() if v is not None}

    def collect(self) -> CollectorResult:
        if self._node is not None:
            node = self._node
            host = HostRecord(
                hostname=node["hostname"],
                cpu_cores=node["cpu_cores"],
                memory_total_mib=node["memory_mib"],
                memory_available_mib=node.get("memory_available_mib", node["memory_mib"]),
                load_1m=float(node.get("load_1m", 0.0)),
                numa_nodes={k: list(v) for k, v in self._numa.items()},
                attributes=dict(self._static),
            )
            return CollectorResult(host=host)
        memory = psutil.virtual_memory()
        host = HostRecord(
            hostname=socket.gethostname(),
            cpu_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 0,
            memory_total_mib=memory.total // MIB,
            memory_available_mib=memory.available // MIB,
            load_1m=os.getloadavg()[0],
            numa_nodes={k: list(v) for k, v in self._numa.items()},
            attributes=dict(self._static),
        )
        return CollectorResult(host=host)

