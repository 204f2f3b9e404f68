"""AMD Instinct GPUs through ROCm's ``amdsmi`` Python module.

``amdsmi`` loads ``libamd_smi.so`` at import time; where ROCm is absent the import raises
``KeyError`` rather than ``ImportError``, hence ``except (ImportError, KeyError, OSError)``.
The module is a constructor argument (the real one, or :class:`agents.fake.FakeAmdSmi`).
A query the board cannot answer is ``None``; it never fails the pass.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from agents.collectors.base import CollectorResult, describe, log_once, normalize_bus_id, render_node_files
from poold_wire.records import DeviceRecord

log = logging.getLogger(__name__)

_MODEL = re.compile(r"\b(MI\d+[A-Z]*)\b")


def canonical_model(market_name: str) -> str:
    """"AMD Instinct MI300X" -> "MI300X"; other names keep their words minus the brand."""
    match = _MODEL.search(market_name)
    if match:
        return match.group(1)
    return market_name.removeprefix("AMD ").strip()[:80] or "unknown"


class AmdCollector:
    """Reports every GPU ``amdsmi`` lists."""

    name = "amd"

    def __init__(self, amdsmi: Any = None, *, dev_root: str | None = "/"):
        """``amdsmi``: the module or a fake (default: imported when first needed);
        ``dev_root``: where ``/dev`` is (None: report no device files)."""
        self._module = amdsmi
        self.dev_root = dev_root
        self._import_error: str | None = None
        self._initialized = False

    def _amdsmi(self) -> Any:
        if self._module is None and self._import_error is None:
            try:
                import amdsmi
            except (ImportError, KeyError, OSError) as err:
                self._import_error = describe(err)
            else:
                self._module = amdsmi
        return self._module

    def _call(self, function: str, *args: Any) -> Any:
        """``amdsmi.<function>(*args)``, or None when the board or library cannot answer."""
        module = self._module
        fn = getattr(module, function, None)
        if fn is None:
            log_once(log, logging.INFO, f"amdsmi-missing:{function}", "this amdsmi has no %s", function)
            return None
        try:
            return fn(*args)
        except getattr(module, "AmdSmiException", Exception) as err:
            log_once(log, logging.DEBUG, f"amdsmi-error:{function}", "amdsmi %s failed: %s", function, err)
            return None

    def collect(self) -> CollectorResult:
        module = self._amdsmi()
        if module is None:
            return CollectorResult.absent(f"amdsmi not importable ({self._import_error})")
        error = getattr(module, "AmdSmiException", Exception)
        try:
            if not self._initialized:
                module.amdsmi_init()
                self._initialized = True
            handles = module.amdsmi_get_processor_handles()
        except error as err:
            return CollectorResult.error(f"amdsmi cannot list GPUs ({describe(err)})")
        return CollectorResult(devices=[self._device(index, handle) for index, handle in enumerate(handles)])

    def _device(self, index: int, handle: Any) -> DeviceRecord:
        asic = self._call("amdsmi_get_gpu_asic_info", handle) or {}
        vram = self._call("amdsmi_get_gpu_vram_info", handle) or {}
        usage = self._call("amdsmi_get_gpu_vram_usage", handle) or {}
        activity = self._call("amdsmi_get_gpu_activity", handle) or {}
        power = self._call("amdsmi_get_power_info", handle) or {}
        bus_id = normalize_bus_id(self._call("amdsmi_get_gpu_device_bdf", handle))
        uuid = self._call("amdsmi_get_gpu_device_uuid", handle) or (f"AMDGPU-{bus_id}" if bus_id else f"AMDGPU-{index}")
        market_name = str(asic.get("market_name") or "")
        total = usage.get("vram_total") or vram.get("vram_size")
        used = usage.get("vram_used")
        watts = power.get("current_socket_power") or power.get("average_socket_power")
        numa = self._call("amdsmi_topo_get_numa_node_number", handle)
        return DeviceRecord(
            uuid=str(uuid),
            vendor="amd",
            kind="gpu",
            model=canonical_model(market_name) if market_name else "unknown",
            name=market_name,
            index=index,
            bus_id=bus_id,
            memory_total_mib=int(total) if total is not None else None,
            memory_free_mib=max(int(total) - int(used), 0) if total is not None and used is not None else None,
            architecture=asic.get("target_graphics_version"),
            power_w=float(watts) if isinstance(watts, (int, float)) else None,
            power_limit_w=float(power["power_limit"]) if isinstance(power.get("power_limit"), (int, float)) else None,
            utilization_pct=float(activity["gfx_activity"]) if isinstance(activity.get("gfx_activity"), (int, float))
            else None,
            numa_node=numa if isinstance(numa, int) and numa >= 0 else None,
            attributes={"compute_units": asic.get("num_compute_units"), "pci_device_id": asic.get("device_id"),
                        "device_files": render_node_files(self.dev_root, bus_id, "/dev/kfd")},
        )

    def close(self) -> None:
        if self._initialized:
            self._initialized = False
            self._call("amdsmi_shut_down")
