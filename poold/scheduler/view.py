"""The scheduler's own in-memory picture of the pool (not ORM rows, not API schemas).

Built once per scheduling pass from the store, then updated in place as the pass places
jobs, so later jobs in the same pass see the earlier placements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EPSILON = 1e-9


@dataclass
class DeviceView:
    """One device as placement sees it. Memory is MiB; ``free_share`` is in 0..1."""

    id: int
    uuid: str
    node: "NodeView"
    kind: str
    vendor: str
    model: str
    index: int | None = None
    memory_total_mib: int | None = None
    memory_held_mib: int = 0
    free_share: float = 1.0
    healthy: bool = True
    health_reason: str | None = None
    compute_capability: str | None = None
    numa_node: int | None = None
    parent_id: int | None = None
    has_slices: bool = False
    price_per_hour: float = 0.0
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_free_mib(self) -> int | None:
        if self.memory_total_mib is None:
            return None
        return self.memory_total_mib - self.memory_held_mib

    @property
    def whole_free(self) -> bool:
        return self.free_share >= 1 - EPSILON

    @property
    def mig_profile(self) -> str | None:
        return self.attributes.get("mig_profile")

    def nvlink_to(self, other: "DeviceView") -> int:
        """Number of NVLink links between this device and ``other`` (0 when none or unknown)."""
        return int((self.attributes.get("nvlink") or {}).get(other.uuid, 0))


@dataclass
class NodeView:
    id: int
    name: str
    ready: bool = True
    drained: bool = False
    cpu_cores: float = 0.0
    cpu_held: float = 0.0
    memory_total_mib: int = 0
    memory_held_mib: int = 0
    devices: list[DeviceView] = field(default_factory=list)

    @property
    def cpu_free(self) -> float:
        return self.cpu_cores - self.cpu_held

    @property
    def memory_free_mib(self) -> int:
        return self.memory_total_mib - self.memory_held_mib


@dataclass
class PoolView:
    nodes: list[NodeView] = field(default_factory=list)

    def device(self, device_id: int) -> DeviceView:
        for node in self.nodes:
            for device in node.devices:
                if device.id == device_id:
                    return device
        raise KeyError(device_id)
