"""How the GPUs of one node connect: NVLink link counts and the PCIe relation of every pair.

NVLink: each GPU's links are walked with ``nvmlDeviceGetNvLinkState`` until NVML refuses
a link number (the link count changed between releases). A link whose far end is the
other GPU's PCI address is a direct link; on HGX/DGX boards the far end is an NVSwitch,
and a pair whose ``nvmlDeviceGetP2PStatus(.., NVLINK)`` is OK is counted with as many
links as the poorer of the two has into the switches (``nvidia-smi topo -m`` shows NV18
on HGX H100).

PCIe: ``nvmlDeviceGetTopologyCommonAncestor`` named as in :data:`PCIE_LEVELS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from agents.collectors.base import normalize_bus_id
from agents.collectors.nvml_query import NvmlQuery

PCIE_LEVELS = {
    0: "same_board",
    10: "single_switch",
    20: "multiple_switches",
    30: "host_bridge",
    40: "same_numa",
    50: "system",
}


@dataclass(frozen=True)
class GpuRef:
    uuid: str
    handle: Any
    bus_id: str | None


@dataclass(frozen=True)
class Topology:
    """``nvlink[a][b]``: links between GPUs a and b; ``pcie[a][b]``: their PCIe relation."""

    nvlink: dict[str, dict[str, int]]
    pcie: dict[str, dict[str, str]]


def _links(query: NvmlQuery, gpu: GpuRef) -> list[str | None]:
    """Far-end PCI addresses of the GPU's active NVLinks (None where NVML cannot say)."""
    nvml = query.nvml
    far_ends = []
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        state = query("nvmlDeviceGetNvLinkState", gpu.handle, link)
        if state is None:
            break
        if state != nvml.NVML_FEATURE_ENABLED:
            continue
        remote = query("nvmlDeviceGetNvLinkRemotePciInfo", gpu.handle, link)
        far_ends.append(normalize_bus_id(remote.busId) if remote is not None else None)
    return far_ends


def read_topology(query: NvmlQuery, gpus: list[GpuRef]) -> Topology:
    """NVLink and PCIe relations of every pair of ``gpus``; both directions are filled."""
    nvml = query.nvml
    links = {g.uuid: _links(query, g) for g in gpus}
    gpu_buses = {g.bus_id for g in gpus if g.bus_id}
    nvlink: dict[str, dict[str, int]] = {g.uuid: {} for g in gpus}
    pcie: dict[str, dict[str, str]] = {g.uuid: {} for g in gpus}
    for a, b in combinations(gpus, 2):
        level = query("nvmlDeviceGetTopologyCommonAncestor", a.handle, b.handle)
        if level in PCIE_LEVELS:
            pcie[a.uuid][b.uuid] = pcie[b.uuid][a.uuid] = PCIE_LEVELS[level]
        count = sum(1 for far in links[a.uuid] if far is not None and far == b.bus_id)
        if count == 0 and links[a.uuid] and links[b.uuid]:
            p2p = query("nvmlDeviceGetP2PStatus", a.handle, b.handle, nvml.NVML_P2P_CAPS_INDEX_NVLINK)
            if p2p == nvml.NVML_P2P_STATUS_OK:
                # Through NVSwitches: every link that does not end at a GPU carries the pair's traffic.
                count = min(sum(1 for far in links[g.uuid] if far not in gpu_buses) for g in (a, b))
        if count:
            nvlink[a.uuid][b.uuid] = nvlink[b.uuid][a.uuid] = count
    return Topology(nvlink=nvlink, pcie=pcie)
