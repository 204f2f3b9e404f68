"""What the columnar pool is told and hands out, as plain values: a node's and a device's
facts (:class:`NodeSpec`, :class:`DeviceSpec`), what changes on a device (:class:`DeviceState`),
what one placement holds on one node (:class:`Holding`), and names kept as small ints
(:class:`Codes`). Memory is MiB; shares are fractions of one device (0..1)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeSpec:
    """A node as placement sees it. ``id`` is the store's id (any unique int in simulations)."""

    id: int
    name: str
    cpu_cores: float
    memory_total_mib: int
    ready: bool = True
    drained: bool = False
    network: str | None = None  # the agent's network label: a gang's parts share one (None: the unlabelled group)


@dataclass(frozen=True)
class DeviceSpec:
    """One device's facts. ``parent_id`` names the whole GPU of a MIG slice; ``nvlink`` maps a
    peer's uuid to its link count and ``pcie`` to the PCIe relation (a ``PCIE_LEVELS`` name)."""

    id: int
    uuid: str
    kind: str
    model: str
    index: int | None = None
    memory_total_mib: int | None = None
    compute_capability: str | None = None
    numa_node: int | None = None
    parent_id: int | None = None
    mig_profile: str | None = None
    mig_slices: int = 0
    fpga_shell: str | None = None
    price_per_hour: float = 0.0
    nvlink: tuple[tuple[str, int], ...] = ()
    pcie: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DeviceState:
    """What changes often on a device: health, memory used outside poold, and what poold holds."""

    healthy: bool = True
    health_reason: str | None = None
    memory_outside_mib: int = 0
    held_share: float = 0.0
    held_memory_mib: int = 0


@dataclass(frozen=True)
class Holding:
    """What one placement holds: devices (slots) with a share and memory each, node CPU and memory."""

    job_id: int
    node: int
    devices: tuple[int, ...]
    share: float
    memory_mib: tuple[int, ...]
    cpu_cores: float
    host_memory_mib: int


def cc_number(text: str | None) -> int:
    """'8.6' -> 8006, comparable as an int; -1 when absent or unreadable."""
    if not text:
        return -1
    major, _, minor = text.partition(".")
    try:
        return int(major) * 1000 + int(minor or 0)
    except ValueError:
        return -1


class Codes:
    """Names as small ints (case-insensitive), so filters compare ints over arrays."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._by_key: dict[str, int] = {}

    def code(self, name: str) -> int:
        key = name.lower()
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = len(self.names)
            self.names.append(name)
        return found

    def find(self, name: str) -> int:
        """The code of ``name``, or -1 when the pool has never seen it."""
        return self._by_key.get(name.lower(), -1)
