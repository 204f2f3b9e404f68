"""MIG slices of one GPU as device records.

A slice is one compute instance inside one GPU instance. Its profile name ("1g.10gb")
comes from NVML itself: the slice's attributes (``gpuInstanceSliceCount``,
``memorySizeMB``) are matched against the GPU's instance profiles, whose v2 info carries
the name ("MIG 1g.10gb"). Where the driver cannot list profiles the name is rebuilt as
``<slices>g.<ceil(memory GiB)>gb``, which gives the marketed names on A100, H100 and H200.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agents.collectors.base import MIB, device_files
from agents.collectors.nvml_query import NvmlQuery, to_str
from poold_wire.records import DeviceRecord, Health


@dataclass(frozen=True)
class MigProfile:
    """A GPU-instance profile as NVML lists it for one GPU."""

    profile_id: int
    name: str
    gpu_slices: int
    memory_mib: int


def gpu_instance_profiles(query: NvmlQuery, handle: Any) -> list[MigProfile]:
    """Every GPU-instance profile the GPU supports (unsupported indices are skipped)."""
    count = getattr(query.nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0)
    profiles = []
    for index in range(count):
        info = query("nvmlDeviceGetGpuInstanceProfileInfo", handle, index)
        if info is None:
            continue
        name = str(to_str(getattr(info, "name", "")) or "").removeprefix("MIG ").strip()
        profiles.append(MigProfile(
            profile_id=info.id,
            name=name or _rebuilt_name(info.sliceCount, info.memorySizeMB),
            gpu_slices=info.sliceCount,
            memory_mib=info.memorySizeMB,
        ))
    return profiles


def _rebuilt_name(gpu_slices: int, memory_mib: int) -> str:
    return f"{gpu_slices}g.{math.ceil(memory_mib / 1024)}gb"


def profile_name(profiles: list[MigProfile], gpu_slices: int | None, compute_slices: int | None,
                 memory_mib: int | None) -> str | None:
    """The slice's profile: "3g.40gb", or "1c.3g.40gb" for a compute instance smaller than its GPU instance."""
    if gpu_slices is None or memory_mib is None:
        return None
    matches = [p.name for p in profiles if p.gpu_slices == gpu_slices and p.memory_mib == memory_mib]
    # "1g.10gb" and "1g.10gb+me" share slices and memory; a slice without media extensions is the usual one.
    matches.sort(key=lambda name: ("+" in name, name))
    name = matches[0] if matches else _rebuilt_name(gpu_slices, memory_mib)
    if compute_slices and compute_slices < gpu_slices:
        name = f"{compute_slices}c.{name}"
    return name


def processes(query: NvmlQuery, handle: Any) -> list[dict[str, Any]] | None:
    """Running compute processes: ``[{"pid", "used_memory_mib"}]``; None when NVML cannot tell."""
    found = query("nvmlDeviceGetComputeRunningProcesses", handle)
    if found is None:
        return None
    return [
        {"pid": int(p.pid), "used_memory_mib": None if p.usedGpuMemory is None else int(p.usedGpuMemory) // MIB}
        for p in found
    ]


def mig_device_files(dev_root: str | None, parent: DeviceRecord, gi: int | None, ci: int | None) -> list[str]:
    """A slice's device files: its GPU's, and the capability files of its GPU instance and
    compute instance (``/dev/nvidia-caps/nvidia-cap<N>``, their minors read from
    ``/proc/driver/nvidia-caps/mig-minors``: ``gpu0/gi3/access 30``). None at all when either
    capability is not found: a job holding fewer files than its slice needs could not use it."""
    minor, gpu_files = parent.attributes.get("minor"), parent.attributes.get("device_files") or []
    if dev_root is None or minor is None or gi is None or ci is None or not gpu_files:
        return []
    wanted = (f"gpu{minor}/gi{gi}/access", f"gpu{minor}/gi{gi}/ci{ci}/access")
    try:
        lines = (Path(dev_root) / "proc/driver/nvidia-caps/mig-minors").read_text().splitlines()
    except OSError:
        return []
    numbers = dict(line.split()[:2] for line in lines if len(line.split()) >= 2)
    caps = device_files(dev_root, *(f"/dev/nvidia-caps/nvidia-cap{numbers[name]}" for name in wanted if name in numbers))
    return [*gpu_files, *caps] if len(caps) == len(wanted) else []


def mig_slices(query: NvmlQuery, handle: Any, parent: DeviceRecord, profiles: list[MigProfile],
               health_of: Callable[[str], tuple[Health, str | None]], dev_root: str | None = None) -> list[DeviceRecord]:
    """The MIG slices of a MIG-enabled GPU, each with ``parent_uuid`` set to the GPU.

    Empty MIG indexes (``NVMLError_NotFound``) are skipped. A slice inherits its parent's
    unhealthy state, since a fault of the GPU takes down every slice on it.
    """
    slices = []
    for index in range(query("nvmlDeviceGetMaxMigDeviceCount", handle, default=0)):
        slice_handle = query("nvmlDeviceGetMigDeviceHandleByIndex", handle, index)
        if slice_handle is None or not _flag(query("nvmlDeviceIsMigDeviceHandle", slice_handle, default=1)):
            continue
        uuid = to_str(query("nvmlDeviceGetUUID", slice_handle))
        if not uuid:
            continue
        gi, ci = query("nvmlDeviceGetGpuInstanceId", slice_handle), query("nvmlDeviceGetComputeInstanceId", slice_handle)
        memory = query("nvmlDeviceGetMemoryInfo", slice_handle)
        attributes = query("nvmlDeviceGetAttributes", slice_handle)
        gpu_slices = attributes.gpuInstanceSliceCount if attributes is not None else None
        compute_slices = attributes.computeInstanceSliceCount if attributes is not None else None
        profile_memory = attributes.memorySizeMB if attributes is not None else None
        if parent.health == "unhealthy":
            health, reason = parent.health, f"parent GPU {parent.uuid} is unhealthy: {parent.health_reason}"
        else:
            health, reason = health_of(uuid)
        slices.append(DeviceRecord(
            uuid=uuid,
            vendor="nvidia",
            kind="gpu",
            model=parent.model,
            name=f"{parent.name} MIG {profile_name(profiles, gpu_slices, compute_slices, profile_memory) or ''}".strip(),
            bus_id=parent.bus_id,
            parent_uuid=parent.uuid,
            memory_total_mib=memory.total // MIB if memory is not None else profile_memory,
            memory_free_mib=memory.free // MIB if memory is not None else None,
            compute_capability=parent.compute_capability,
            architecture=parent.architecture,
            numa_node=parent.numa_node,
            health=health,
            health_reason=reason,
            attributes={
                "mig_profile": profile_name(profiles, gpu_slices, compute_slices, profile_memory),
                "mig_index": index,
                "mig_gi_id": gi,
                "mig_ci_id": ci,
                "mig_slices": compute_slices,
                "mig_gpu_slices": gpu_slices,
                "multiprocessor_count": attributes.multiprocessorCount if attributes is not None else None,
                "processes": processes(query, slice_handle),
                "device_files": mig_device_files(dev_root, parent, gi, ci),
            },
        ))
    return slices


def _flag(value: Any) -> bool:
    """NVML booleans: ``nvmlDeviceIsMigDeviceHandle`` gives a ctypes ``c_uint``, not an int."""
    return bool(getattr(value, "value", value))
