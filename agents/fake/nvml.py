"""A fake ``pynvml`` driven by a fixture, for tests, benchmarks and GPU-less development.

``FakeNvml(fixture)`` behaves like the ``pynvml`` module for every function the collectors
and the XID watcher call: the same names, argument order, return types (ctypes structs
from the real module, ``c_uint`` from ``nvmlDeviceIsMigDeviceHandle``, bytes in memory
info, milliwatts) and the same exception classes, taken from the real ``pynvml`` so that
``except nvml.NVMLError_NotFound`` means the same on both. Constants, struct types and
error classes are delegated to the real module; an NVML function the fake does not
implement raises ``AttributeError``, like an older ``pynvml`` without it.

Deliberate differences: device handles are the fixture's :class:`FakeGpu` /
:class:`FakeMigSlice` objects instead of ctypes pointers (both are opaque to callers), and
``nvmlEventSetWait`` returns a plain object with the attribute names of
``c_nvmlEventData_t`` because a ctypes pointer field cannot hold a Python handle.
"""

from __future__ import annotations

import threading
import weakref
from ctypes import c_uint
from pathlib import Path
from types import FunctionType
from typing import Any

import pynvml

from agents.fake.fixture import Fixture
from agents.fake.fixture_file import FixtureError, live_claims, state_dir
from agents.fake.nvml_call import nvml_function
from agents.fake.nvml_events import NO_INSTANCE, EventsMixin, FakeEventData, FakeEventSet
from agents.fake.nvml_model import MAX_MIG_DEVICES, FakeGpu, FakeMigSlice, build_gpus

__all__ = ["FakeEventData", "FakeEventSet", "FakeNvml"]

MIB = 1024 * 1024
_ECC_KEYS = {(0, 0): "volatile_corrected", (1, 0): "volatile_uncorrected",
             (0, 1): "aggregate_corrected", (1, 1): "aggregate_uncorrected"}


class FakeNvml(EventsMixin):
    """One fake node's NVML; use the instance where the ``pynvml`` module would go."""

    def __init__(self, fixture: Fixture, state: str | Path | None = None):
        self.__name__ = f"agents.fake.nvml[{fixture.name}]"
        self.fixture = fixture
        self.state = state_dir(state)
        nvidia = fixture.data.get("nvidia") or {}
        faults = fixture.data.get("faults") or {}
        self._gpus = build_gpus(fixture.data)
        self._by_uuid: dict[str, FakeGpu | FakeMigSlice] = {g.uuid: g for g in self._gpus}
        self._by_uuid.update({s.uuid: s for g in self._gpus for s in g.slices})
        self._driver = str(nvidia.get("driver_version", "550.54.15"))
        self._cuda = int(nvidia.get("cuda_version", 12040))
        self._nvlink = nvidia.get("nvlink", "none")
        self._nvswitches = int(nvidia.get("nvswitches", 4))
        if self._nvlink not in ("none", "switch"):
            raise FixtureError(f"{fixture.name}: nvidia.nvlink must be 'none' or 'switch', not {self._nvlink!r}")
        if self._nvlink == "switch" and self._nvswitches < 1:
            raise FixtureError(f"{fixture.name}: nvidia.nvswitches must be at least 1 with nvlink = 'switch'")
        gpu_buses = {int(g.bus_id.split(":")[1], 16) for g in self._gpus}
        free_buses = (bus for bus in range(0x05, 0x100) if bus not in gpu_buses)
        self._switch_buses = [f"00000000:{next(free_buses):02X}:00.0" for _ in range(max(1, self._nvswitches))]
        # A node without NVIDIA GPUs has no driver either: nvmlInit fails as it would there.
        self._init_error = faults.get("nvml_init") or (None if fixture.has("nvidia") else "LibraryNotFound")
        if self._init_error and not hasattr(pynvml, f"NVMLError_{self._init_error}"):
            raise FixtureError(f"{fixture.name}: faults.nvml_init {self._init_error!r} is no NVMLError_ class")
        unsupported = faults.get("not_supported", [])
        self._not_supported: bool | set[str] = True if unsupported == "optional" else set(unsupported)
        self._missing = set(faults.get("missing_functions", []))
        self._scheduled = [(int(x["gpu"]), int(x["xid"]), int(x.get("after_waits", 0))) for x in faults.get("xid", [])]
        if any(not 0 <= gpu < len(self._gpus) for gpu, _, _ in self._scheduled):
            raise FixtureError(f"{fixture.name}: faults.xid names a GPU index the node does not have")
        self._refcount = 0
        self._lock = threading.Lock()
        self._event_sets: weakref.WeakSet[FakeEventSet] = weakref.WeakSet()
        self._xid_offset = self._xid_file_size()

    def __getattr__(self, name: str) -> Any:
        value = getattr(pynvml, name)
        if isinstance(value, FunctionType):
            raise AttributeError(f"the fake NVML does not implement {name}")
        return value

    def __repr__(self) -> str:
        return f"<FakeNvml {self.fixture.name}: {len(self._gpus)} GPUs>"

    # --- library -------------------------------------------------------------------

    @nvml_function(core=True, init=False)
    def nvmlInitWithFlags(self, flags: int) -> None:
        if self._init_error:
            raise getattr(pynvml, f"NVMLError_{self._init_error}")()
        with self._lock:
            self._refcount += 1

    def nvmlInit(self) -> None:
        self.nvmlInitWithFlags(0)

    @nvml_function(core=True, init=False)
    def nvmlShutdown(self) -> None:
        with self._lock:
            if self._refcount == 0:
                raise pynvml.NVMLError_Uninitialized()
            self._refcount -= 1

    @nvml_function(core=True)
    def nvmlSystemGetDriverVersion(self) -> str:
        return self._driver

    @nvml_function()
    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self._cuda

    nvmlSystemGetCudaDriverVersion_v2 = nvmlSystemGetCudaDriverVersion

    # --- devices -------------------------------------------------------------------

    @nvml_function(core=True)
    def nvmlDeviceGetCount(self) -> int:
        return len(self._gpus)

    @nvml_function(core=True)
    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self._gpus):
            raise pynvml.NVMLError_InvalidArgument()
        gpu = self._gpus[index]
        if gpu.lost == "handle":
            raise pynvml.NVMLError_GpuIsLost()
        return gpu

    @nvml_function(core=True)
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu | FakeMigSlice:
        try:
            return self._by_uuid[uuid.decode() if isinstance(uuid, bytes) else uuid]
        except KeyError:
            raise pynvml.NVMLError_NotFound() from None

    @nvml_function(core=True, mig=True)
    def nvmlDeviceGetName(self, handle: FakeGpu | FakeMigSlice) -> str:
        if isinstance(handle, FakeMigSlice):
            return f"{handle.parent.name} MIG {handle.profile.name}"
        return handle.name

    @nvml_function(core=True, mig=True)
    def nvmlDeviceGetUUID(self, handle: FakeGpu | FakeMigSlice) -> str:
        return handle.uuid

    @nvml_function()
    def nvmlDeviceGetSerial(self, handle: FakeGpu) -> str:
        if handle.serial is None:
            raise pynvml.NVMLError_NotSupported()
        return handle.serial

    @nvml_function(core=True, mig=True)
    def nvmlDeviceGetPciInfo(self, handle: FakeGpu | FakeMigSlice) -> pynvml.nvmlPciInfo_t:
        gpu = handle.parent if isinstance(handle, FakeMigSlice) else handle
        return _pci_info(gpu.bus_id, gpu.pci_device_id)

    nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo

    @nvml_function(core=True, mig=True)
    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu | FakeMigSlice, version: int | None = None):
        if isinstance(handle, FakeMigSlice):
            total, used = handle.profile.memory_mib, self._claimed_mib(handle.uuid)
        else:
            total = handle.memory_mib
            used = handle.memory_used_mib + sum(self._claimed_mib(u) for u in self._uuids_on(handle))
        used = min(used, total)
        if version:
            memory = pynvml.c_nvmlMemory_v2_t(version=version, total=total * MIB, reserved=0)
        else:
            memory = pynvml.c_nvmlMemory_t(total=total * MIB)
        memory.used, memory.free = used * MIB, (total - used) * MIB
        return memory

    @nvml_function()
    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> pynvml.c_nvmlUtilization_t:
        if handle.mig_enabled:
            raise pynvml.NVMLError_NotSupported()
        return pynvml.c_nvmlUtilization_t(gpu=handle.utilization_pct, memory=handle.utilization_pct // 2)

    @nvml_function()
    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError_InvalidArgument()
        return handle.temperature_c

    @nvml_function()
    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        return round(handle.power_w * 1000)

    @nvml_function()
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:
        return round(handle.power_limit_w * 1000)

    @nvml_function()
    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeGpu) -> tuple[int, int]:
        return handle.compute_capability

    @nvml_function()
    def nvmlDeviceGetArchitecture(self, handle: FakeGpu) -> int:
        return handle.architecture

    @nvml_function()
    def nvmlDeviceGetNumaNodeId(self, handle: FakeGpu) -> int:
        if handle.numa_node is None:
            raise pynvml.NVMLError_NotSupported()
        return int(handle.numa_node)

    @nvml_function(core=True)
    def nvmlDeviceGetMinorNumber(self, handle: FakeGpu) -> int:
        return handle.index  # /dev/nvidia<minor>; the driver numbers GPUs in the order it finds them

    @nvml_function()
    def nvmlDeviceGetEccMode(self, handle: FakeGpu) -> list[int]:
        state = int(handle.ecc)
        return [state, state]

    @nvml_function()
    def nvmlDeviceGetTotalEccErrors(self, handle: FakeGpu, error_type: int, counter_type: int) -> int:
        if not handle.ecc:
            raise pynvml.NVMLError_NotSupported()
        key = _ECC_KEYS.get((error_type, counter_type))
        if key is None:
            raise pynvml.NVMLError_InvalidArgument()
        return handle.ecc_errors.get(key, 0)

    @nvml_function()
    def nvmlDeviceGetRemappedRows(self, handle: FakeGpu) -> tuple[int, int, int, int]:
        if handle.architecture < pynvml.NVML_DEVICE_ARCH_AMPERE:
            raise pynvml.NVMLError_NotSupported()
        return handle.remapped_rows or (0, 0, 0, 0)

    @nvml_function(mig=True)
    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu | FakeMigSlice) -> list:
        if isinstance(handle, FakeMigSlice):
            owners = [(handle.uuid, handle.gi_id, handle.ci_id)]
        else:
            owners = [(handle.uuid, NO_INSTANCE, NO_INSTANCE)]
            owners += [(s.uuid, s.gi_id, s.ci_id) for s in handle.slices]
        processes = []
        for uuid, gi, ci in owners:
            for pid, used_mib in live_claims(self.state, uuid):
                info = pynvml.c_nvmlProcessInfo_t(pid=pid, usedGpuMemory=used_mib * MIB,
                                                  gpuInstanceId=gi, computeInstanceId=ci)
                processes.append(pynvml.nvmlStructToFriendlyObject(info))
        return processes

    nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses

    # --- MIG -----------------------------------------------------------------------

    @nvml_function()
    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> list[int]:
        if not handle.mig_capable:
            raise pynvml.NVMLError_NotSupported()
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if handle.mig_enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    @nvml_function()
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeGpu) -> int:
        if not handle.mig_capable:
            raise pynvml.NVMLError_NotSupported()
        return MAX_MIG_DEVICES if handle.mig_enabled else 0

    @nvml_function()
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeGpu, index: int) -> FakeMigSlice:
        if not handle.mig_enabled or not 0 <= index < MAX_MIG_DEVICES:
            raise pynvml.NVMLError_InvalidArgument()
        if index >= len(handle.slices):
            raise pynvml.NVMLError_NotFound()
        return handle.slices[index]

    @nvml_function(core=True, mig=True)
    def nvmlDeviceIsMigDeviceHandle(self, handle: FakeGpu | FakeMigSlice) -> c_uint:
        return c_uint(1 if isinstance(handle, FakeMigSlice) else 0)

    @nvml_function(mig=True)
    def nvmlDeviceGetGpuInstanceId(self, handle: FakeMigSlice) -> int:
        return _slice_of(handle).gi_id

    @nvml_function(mig=True)
    def nvmlDeviceGetComputeInstanceId(self, handle: FakeMigSlice) -> int:
        return _slice_of(handle).ci_id

    @nvml_function(mig=True)
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: FakeMigSlice) -> FakeGpu:
        return _slice_of(handle).parent

    @nvml_function()
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: FakeGpu, profile: int, version: int = 2):
        if not 0 <= profile < pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise pynvml.NVMLError_InvalidArgument()
        spec = next((p for p in handle.profile_set.values() if p.index == profile), None)
        if not handle.mig_capable or spec is None:
            raise pynvml.NVMLError_NotSupported()
        if version == 2:
            info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
            info.name = f"MIG {spec.name}".encode()
        elif version == 1:
            info = pynvml.c_nvmlGpuInstanceProfileInfo_t()
        else:
            raise pynvml.NVMLError_FunctionNotFound()
        info.id, info.sliceCount, info.instanceCount = spec.profile_id, spec.slices, spec.instance_count
        info.multiprocessorCount, info.memorySizeMB = spec.sm_count, spec.memory_mib
        info.isP2pSupported, info.copyEngineCount = 0, max(1, spec.slices)
        return info

    nvmlDeviceGetGpuInstanceProfileInfoV = nvmlDeviceGetGpuInstanceProfileInfo

    @nvml_function(mig=True)
    def nvmlDeviceGetAttributes(self, handle: FakeMigSlice) -> pynvml.c_nvmlDeviceAttributes:
        spec = _slice_of(handle).profile
        return pynvml.c_nvmlDeviceAttributes(
            multiprocessorCount=spec.sm_count, sharedCopyEngineCount=max(1, spec.slices),
            gpuInstanceSliceCount=spec.slices, computeInstanceSliceCount=spec.slices,
            memorySizeMB=spec.memory_mib,
        )

    nvmlDeviceGetAttributes_v2 = nvmlDeviceGetAttributes

    # --- topology ------------------------------------------------------------------

    @nvml_function()
    def nvmlDeviceGetTopologyCommonAncestor(self, first: FakeGpu, second: FakeGpu) -> int:
        if first is second:
            return pynvml.NVML_TOPOLOGY_INTERNAL
        if first.pcie_switch is not None and first.pcie_switch == second.pcie_switch:
            return pynvml.NVML_TOPOLOGY_SINGLE
        if first.numa_node is not None and first.numa_node == second.numa_node:
            return pynvml.NVML_TOPOLOGY_NODE
        return pynvml.NVML_TOPOLOGY_SYSTEM

    def _link(self, handle: FakeGpu, link: int) -> None:
        if self._nvlink == "none" or handle.nvlink_links == 0:
            raise pynvml.NVMLError_NotSupported()
        if not 0 <= link < min(handle.nvlink_links, pynvml.NVML_NVLINK_MAX_LINKS):
            raise pynvml.NVMLError_InvalidArgument()

    @nvml_function()
    def nvmlDeviceGetNvLinkState(self, handle: FakeGpu, link: int) -> int:
        self._link(handle, link)
        return pynvml.NVML_FEATURE_ENABLED

    @nvml_function()
    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: FakeGpu, link: int) -> pynvml.nvmlPciInfo_t:
        self._link(handle, link)
        return _pci_info(self._switch_buses[link % len(self._switch_buses)], 0x22A310DE)

    @nvml_function()
    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: FakeGpu, link: int) -> int:
        self._link(handle, link)
        return pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH

    @nvml_function()
    def nvmlDeviceGetP2PStatus(self, first: FakeGpu, second: FakeGpu, caps_index: int) -> int:
        if caps_index == pynvml.NVML_P2P_CAPS_INDEX_NVLINK:
            linked = self._nvlink == "switch" and first.nvlink_links > 0 and second.nvlink_links > 0
            return pynvml.NVML_P2P_STATUS_OK if linked else pynvml.NVML_P2P_STATUS_NOT_SUPPORTED
        return pynvml.NVML_P2P_STATUS_OK

    # --- helpers -------------------------------------------------------------------

    def _uuids_on(self, gpu: FakeGpu) -> list[str]:
        return [gpu.uuid, *(s.uuid for s in gpu.slices)]

    def _claimed_mib(self, uuid: str) -> int:
        return sum(used for _, used in live_claims(self.state, uuid))


def _slice_of(handle: FakeGpu | FakeMigSlice) -> FakeMigSlice:
    if not isinstance(handle, FakeMigSlice):
        raise pynvml.NVMLError_InvalidArgument()
    return handle


def _pci_info(bus_id: str, pci_device_id: int) -> pynvml.nvmlPciInfo_t:
    domain, bus, rest = bus_id.split(":")
    device = rest.split(".")[0]
    info = pynvml.nvmlPciInfo_t()
    info.busId = bus_id.encode()
    info.busIdLegacy = bus_id.encode()
    info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(device, 16)
    info.pciDeviceId = pci_device_id
    return info
