"""The common device and host records that every collector produces.

Everything past a collector is vendor-neutral: the agent reports these records, the
daemon stores them, and the scheduler reads them. Units live in the field names
(``_mib`` is mebibytes, ``_w`` watts, ``_c`` degrees Celsius, ``_pct`` percent).
A field the hardware cannot report is ``None``, never a guess.

Readers are tolerant (unknown fields are ignored, so a newer agent's records load here) and
values are bounded (:mod:`poold_wire.bounds`): a record the daemon could not store or the
scheduler could not read is refused at the door, naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, Strict
from typing_extensions import TypedDict

from poold_wire.bounds import Count32, Count64, Text, Tree, WireModel, check_tree

DeviceKind = Literal["gpu", "npu", "fpga"]
Health = Literal["ok", "unhealthy"]

MAX_MIG_SLICES = 7  # compute slices of a whole GPU
MAX_LINKS = 1024  # NVLinks between two devices (an H100 pair has 18)

DeviceUuid = Annotated[Text, Field(min_length=1, max_length=200)]


class DeviceAttributes(TypedDict, total=False):
    """The vendor-specific facts placement reads, typed; any other key is kept as it came
    (``mig_mode``, ``ecc``, ``processes``, ``npu_chip``...) within the tree bounds."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    mig_profile: Annotated[Text, Field(max_length=64)] | None
    mig_slices: Annotated[int, Strict(), Field(ge=1, le=MAX_MIG_SLICES)] | None
    fpga_shell: Annotated[Text, Field(max_length=1024)] | None
    nvlink: dict[DeviceUuid, Annotated[int, Strict(), Field(ge=0, le=MAX_LINKS)]] | None
    pcie: dict[DeviceUuid, Annotated[Text, Field(max_length=64)]] | None


class DeviceRecord(WireModel):
    """One schedulable or parent device: a GPU, a MIG slice, an NPU, an FPGA.

    Invariants: ``uuid`` is stable across reboots (index order is not); a slice or a
    partition names its whole device in ``parent_uuid``; a device whose slices are
    reported is not itself allocatable (the scheduler enforces that).
    """

    uuid: DeviceUuid
    vendor: Text = Field(min_length=1, max_length=40, description="nvidia, huawei, xilinx, intel, amd")
    kind: DeviceKind
    model: Text = Field(min_length=1, max_length=80, description="canonical chip model: H100, A100, L4, 910B, U250")
    name: Text = Field(default="", max_length=200, description="the vendor's full product name")
    index: Count32 | None = None
    bus_id: Text | None = Field(default=None, max_length=40)
    parent_uuid: DeviceUuid | None = None
    memory_total_mib: Count64 | None = None
    memory_free_mib: Count64 | None = None
    memory_outside_mib: Count64 | None = Field(
        default=None, description="memory in use by processes that are not poold jobs (None: unknown)"
    )
    compute_capability: str | None = Field(
        default=None, pattern=r"^[0-9]{1,3}\.[0-9]{1,3}$", description="major.minor, e.g. '9.0' (NVIDIA only)"
    )
    architecture: Text | None = Field(default=None, max_length=40)
    power_w: float | None = None
    power_limit_w: float | None = None
    temperature_c: float | None = None
    utilization_pct: float | None = None
    numa_node: Count32 | None = None
    health: Health = "ok"
    health_reason: Text | None = Field(default=None, max_length=1024)
    attributes: Annotated[DeviceAttributes, AfterValidator(check_tree)] = Field(
        default_factory=dict,  # type: ignore[arg-type]
        description="vendor-specific facts: mig_profile, mig_slices (1-7), fpga_shell, nvlink (uuid -> links), "
        "pcie (uuid -> relation), mig_mode, npu_chip, ecc, processes; a JSON tree at most 4 deep",
    )


class HostRecord(WireModel):
    """The node itself, as psutil and the drivers see it."""

    hostname: Text = Field(min_length=1, max_length=255)
    cpu_cores: Count32
    memory_total_mib: Count64
    memory_available_mib: Count64 | None = None
    load_1m: float | None = Field(default=None, ge=0)
    numa_nodes: dict[Annotated[Text, Field(max_length=20)], Annotated[list[Count32], Field(max_length=65536)]] = Field(
        default_factory=dict, max_length=1024, description="NUMA node id -> CPU ids"
    )
    attributes: Tree = Field(
        default_factory=dict, description="driver_version, cuda_version, os, agent_version; a JSON tree at most 4 deep"
    )
    network: Text | None = Field(
        default=None, min_length=1, max_length=100,
        description="the network the node is on (the agent's `network` setting): a gang's parts share one",
    )

