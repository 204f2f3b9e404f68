"""The common device and host records that every collector produces.

Everything past a collector is vendor-neutral: the agent reports these records, the
daemon stores them, and the scheduler reads them. Units live in the field names
(``_mib`` is mebibytes, ``_w`` watts, ``_c`` degrees Celsius, ``_pct`` percent).
A field the hardware cannot report is ``None``, never a guess.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DeviceKind = Literal["gpu", "npu", "fpga"]
Health = Literal["ok", "unhealthy"]


class DeviceRecord(BaseModel):
    """One schedulable or parent device: a GPU, a MIG slice, an NPU, an FPGA.

    Invariants: ``uuid`` is stable across reboots (index order is not); a slice or a
    partition names its whole device in ``parent_uuid``; a device whose slices are
    reported is not itself allocatable (the scheduler enforces that).
    """

    model_config = ConfigDict(extra="forbid")

    uuid: str = Field(min_length=1, max_length=200)
    vendor: str = Field(min_length=1, max_length=40, description="nvidia, huawei, xilinx, intel, amd")
    kind: DeviceKind
    model: str = Field(min_length=1, max_length=80, description="canonical chip model: H100, A100, L4, 910B, U250")
    name: str = Field(default="", max_length=200, description="the vendor's full product name")
    index: int | None = Field(default=None, ge=0)
    bus_id: str | None = None
    parent_uuid: str | None = None
    memory_total_mib: int | None = Field(default=None, ge=0)
    memory_free_mib: int | None = Field(default=None, ge=0)
    memory_outside_mib: int | None = Field(
        default=None, ge=0, description="memory in use by processes that are not poold jobs (None: unknown)"
    )
    compute_capability: str | None = Field(default=None, description="e.g. '9.0' (NVIDIA only)")
    architecture: str | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temperature_c: float | None = None
    utilization_pct: float | None = None
    numa_node: int | None = None
    health: Health = "ok"
    health_reason: str | None = None
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="vendor-specific facts: mig_profile, mig_mode, fpga_shell, npu_chip, nvlink, pcie, ecc, processes",
    )


class HostRecord(BaseModel):
    """The node itself, as psutil and the drivers see it."""

    model_config = ConfigDict(extra="forbid")

    hostname: str = Field(min_length=1, max_length=255)
    cpu_cores: int = Field(ge=0)
    memory_total_mib: int = Field(ge=0)
    memory_available_mib: int | None = Field(default=None, ge=0)
    load_1m: float | None = None
    numa_nodes: dict[str, list[int]] = Field(default_factory=dict, description="NUMA node id -> CPU ids")
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="driver_version, cuda_version, os, agent_version"
    )


class Inventory(BaseModel):
    """What one inventory pass found: the host, its devices, and how each collector fared."""

    model_config = ConfigDict(extra="forbid")

    host: HostRecord
    devices: list[DeviceRecord] = Field(default_factory=list)
    collectors: dict[str, str] = Field(
        default_factory=dict, description="collector name -> 'ok', 'absent: why' or 'error: why'"
    )
