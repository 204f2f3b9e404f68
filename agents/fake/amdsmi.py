"""A fake ``amdsmi`` module driven by a fixture's ``[amd]`` section.

Implements the calls :class:`agents.collectors.amd.AmdCollector` makes, with the shapes
of ROCm's ``amdsmi`` Python package: dicts from the ``get`` calls, VRAM in MB, power in
W, and an ``AmdSmiLibraryException`` (a subclass of ``AmdSmiException``) for failures,
including any call before ``amdsmi_init``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.fake.fixture import Fixture
from agents.fake.fixture_file import FixtureError, device_list

AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_NOT_SUPPORTED = 2


class AmdSmiException(Exception):
    """Base of the fake's errors, as in ``amdsmi``."""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int):
        super().__init__(f"amdsmi error {err_code}")
        self.err_code = err_code


@dataclass(frozen=True)
class FakeAmdGpu:
    index: int
    entry: dict[str, Any]


class FakeAmdSmi:
    """Use an instance where the ``amdsmi`` module would go."""

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException

    def __init__(self, fixture: Fixture):
        self.fixture = fixture
        self._gpus = [FakeAmdGpu(i, entry) for i, entry in enumerate(device_list(fixture.data, "amd", "gpus"))]
        for gpu in self._gpus:
            missing = [k for k in ("uuid", "bdf", "market_name", "vram_mb") if k not in gpu.entry]
            if missing:
                raise FixtureError(f"{fixture.name}: amd.gpus[{gpu.index}] is missing {', '.join(missing)}")
        self._initialized = False

    def _check(self, handle: Any = None) -> dict[str, Any]:
        if not self._initialized:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        return handle.entry if isinstance(handle, FakeAmdGpu) else {}

    def amdsmi_init(self, flag: int = 0) -> None:
        self._initialized = True

    def amdsmi_shut_down(self) -> None:
        self._check()
        self._initialized = False

    def amdsmi_get_processor_handles(self) -> list[FakeAmdGpu]:
        self._check()
        return list(self._gpus)

    def amdsmi_get_gpu_asic_info(self, handle: FakeAmdGpu) -> dict[str, Any]:
        entry = self._check(handle)
        return {
            "market_name": entry["market_name"], "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc.",
            "device_id": entry.get("device_id", "0x74a1"), "rev_id": "0x00", "asic_serial": entry.get("serial", ""),
            "num_compute_units": entry.get("compute_units", 304),
            "target_graphics_version": entry.get("target_graphics_version", "gfx942"),
        }

    def amdsmi_get_gpu_vram_info(self, handle: FakeAmdGpu) -> dict[str, Any]:
        entry = self._check(handle)
        return {"vram_type": "HBM3", "vram_vendor": "UNKNOWN", "vram_size": entry["vram_mb"], "vram_bit_width": 8192}

    def amdsmi_get_gpu_vram_usage(self, handle: FakeAmdGpu) -> dict[str, Any]:
        entry = self._check(handle)
        return {"vram_total": entry["vram_mb"], "vram_used": entry.get("vram_used_mb", 0)}

    def amdsmi_get_gpu_device_bdf(self, handle: FakeAmdGpu) -> str:
        return self._check(handle)["bdf"]

    def amdsmi_get_gpu_device_uuid(self, handle: FakeAmdGpu) -> str:
        return self._check(handle)["uuid"]

    def amdsmi_get_gpu_activity(self, handle: FakeAmdGpu) -> dict[str, Any]:
        entry = self._check(handle)
        return {"gfx_activity": entry.get("utilization_pct", 0), "umc_activity": 0, "mm_activity": 0}

    def amdsmi_get_power_info(self, handle: FakeAmdGpu) -> dict[str, Any]:
        entry = self._check(handle)
        if "power_w" not in entry:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return {"current_socket_power": entry["power_w"], "average_socket_power": entry["power_w"],
                "power_limit": entry.get("power_limit_w", 750)}

    def amdsmi_topo_get_numa_node_number(self, handle: FakeAmdGpu) -> int:
        entry = self._check(handle)
        if "numa_node" not in entry:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return entry["numa_node"]
