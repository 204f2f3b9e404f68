"""NVIDIA GPUs and their MIG slices, through NVML.

The collector takes the ``pynvml`` module as a constructor argument (nomad-device-nvidia's
``NvmlDriver`` seam): the real one from ``nvidia-ml-py``, or :class:`agents.fake.FakeNvml`.
Every call goes through :class:`~agents.collectors.nvml_query.NvmlQuery`, so a query the
board cannot answer is ``None`` and one lost GPU is reported unhealthy while the rest
report normally.

Units: memory in MiB (NVML gives bytes), power in W (NVML gives mW), temperature in °C.
Per GPU, ``attributes`` holds ``mig_mode`` (bool), ``mig_capable``, ``serial``, ``ecc``,
``remapped_rows``, ``processes`` (``[{"pid", "used_memory_mib"}]``, None if NVML cannot
tell), ``nvlink`` (``{peer_uuid: links}``), ``pcie`` (``{peer_uuid: relation}``), ``minor``
(the driver's minor number) and ``device_files`` (:func:`gpu_device_files`).
Host attributes: ``driver_version`` ("550.54.15") and ``cuda_version`` ("12.4").
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from agents.collectors.base import MIB, CollectorResult, describe, device_files, log_once, normalize_bus_id, pci_numa_node
from agents.collectors.nvidia_mig import gpu_instance_profiles, mig_slices, processes
from agents.collectors.nvidia_topology import GpuRef, Topology, read_topology
from agents.collectors.nvml_query import NvmlQuery, to_str
from poold_wire.records import DeviceRecord, Health

log = logging.getLogger(__name__)

ARCHITECTURES = {2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere", 8: "Ada",
                 9: "Hopper", 10: "Blackwell", 13: "Rubin"}
_MODEL_TOKEN = re.compile(r"^(?:[A-Z]{1,2}\d{1,4}[A-Z]?|GH\d{3}|GB\d{3})$")
_VENDOR_WORDS = ("NVIDIA", "Tesla", "Quadro", "GeForce")
# Files every CUDA process opens besides its GPU's own /dev/nvidia<minor>.
NVIDIA_SHARED_FILES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


def gpu_device_files(dev_root: str | None, minor: int | None) -> list[str]:
    """A whole GPU's device files: ``/dev/nvidia<minor>`` and the driver's shared ones (those
    that exist). None for a GPU whose minor number NVML does not give."""
    if minor is None:
        return []
    return device_files(dev_root, f"/dev/nvidia{minor}", *NVIDIA_SHARED_FILES)


def canonical_model(name: str) -> str:
    """The short chip model of an NVML name: "NVIDIA H100 80GB HBM3" -> "H100".

    The first token shaped like a model (a letter or two and digits: H100, A100, L40S,
    L4, T4, A10G, GH200) wins; names without one ("NVIDIA GeForce RTX 4090") keep their
    words minus the brand ("RTX 4090").
    """
    tokens = re.split(r"[\s\-_]+", name.strip())
    for token in tokens:
        if _MODEL_TOKEN.match(token):
            return token
    words = [t for t in name.split() if t not in _VENDOR_WORDS]
    return " ".join(words)[:80] or "unknown"


def cuda_version_text(version: int | None) -> str | None:
    """NVML's CUDA driver version as text: 12040 -> "12.4"."""
    if not version:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


class NvidiaCollector:
    """Reports every GPU NVML sees, its MIG slices, topology and health."""

    name = "nvidia"

    def __init__(self, nvml: Any = None, *, sysfs_root: str | None = "/sys", dev_root: str | None = "/",
                 topology_ttl_s: float = 300.0):
        """``nvml``: the ``pynvml`` module or a fake; ``sysfs_root``: where to read a GPU's
        NUMA node when NVML cannot (None: never); ``dev_root``: where ``/dev`` and
        ``/proc/driver`` are (None: report no device files); ``topology_ttl_s``: how long
        NVLink and PCIe relations (which change only with hardware) are reused."""
        if nvml is None:
            import pynvml as nvml
        self.nvml = nvml
        self.query = NvmlQuery(nvml)
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root
        self.topology_ttl_s = topology_ttl_s
        self._initialized = False
        self._lock = threading.Lock()
        self._xid_unhealthy: dict[str, str] = {}
        self._uuid_by_index: dict[int, str] = {}
        self._profiles: dict[str, list] = {}
        self._topology: tuple[tuple[str, ...], float, Topology] | None = None

    # --- health memory, fed by the XID watcher ------------------------------------

    def mark_unhealthy(self, uuid: str, reason: str) -> None:
        """Report ``uuid`` (a GPU or MIG slice) unhealthy with ``reason`` from now on."""
        with self._lock:
            self._xid_unhealthy[uuid] = reason

    def clear_unhealthy(self, uuid: str) -> None:
        """Forget an earlier :meth:`mark_unhealthy` (after the GPU was reset or replaced)."""
        with self._lock:
            self._xid_unhealthy.pop(uuid, None)

    def unhealthy(self) -> dict[str, str]:
        """Devices marked unhealthy by events: uuid -> reason."""
        with self._lock:
            return dict(self._xid_unhealthy)

    def _health_of(self, uuid: str) -> tuple[Health, str | None]:
        with self._lock:
            reason = self._xid_unhealthy.get(uuid)
        return ("unhealthy", reason) if reason else ("ok", None)

    # --- library lifetime -----------------------------------------------------------

    def start(self) -> str | None:
        """Initialise NVML once; None when usable, else the collector status saying why not."""
        if self._initialized:
            return None
        try:
            self.nvml.nvmlInit()
        except self.query.error as err:
            absent = isinstance(err, (self.nvml.NVMLError_LibraryNotFound, self.nvml.NVMLError_DriverNotLoaded))
            status = f"{'absent' if absent else 'error'}: NVML unavailable ({describe(err)})"
            log_once(log, logging.INFO if absent else logging.WARNING, f"nvidia-init:{status}",
                     "NVIDIA collector: %s", status)
            return status
        self._initialized = True
        return None

    def close(self) -> None:
        """Release NVML (it is reference-counted; the XID watcher holds its own reference)."""
        if self._initialized:
            self._initialized = False
            try:
                self.nvml.nvmlShutdown()
            except self.query.error as err:
                log.debug("nvmlShutdown: %s", err)

    # --- the inventory pass ---------------------------------------------------------

    def collect(self) -> CollectorResult:
        status = self.start()
        if status is not None:
            return CollectorResult(status=status)
        q = self.query
        try:
            host = {"driver_version": to_str(q("nvmlSystemGetDriverVersion")),
                    "cuda_version": cuda_version_text(q("nvmlSystemGetCudaDriverVersion"))}
            count = q("nvmlDeviceGetCount")
        except q.library_errors + q.device_errors as err:
            return CollectorResult.error(f"NVML cannot list GPUs ({describe(err)})")
        if count is None:
            return CollectorResult.error("NVML cannot count the GPUs")
        devices: list[DeviceRecord] = []
        readable: list[tuple[DeviceRecord, Any]] = []
        for index in range(count):
            known: dict[str, Any] = {}
            try:
                records, handle = self._read_gpu(index, known)
            except q.device_errors as err:
                reason = f"NVML reports the GPU lost or in need of a reset ({describe(err)})"
                devices.append(self._unreadable_gpu(index, known, reason))
                continue
            except q.library_errors as err:
                return CollectorResult.error(f"NVML failed mid-pass ({describe(err)})")
            devices.extend(records)
            if handle is not None:
                readable.append((records[0], handle))
        self._attach_topology(readable)
        return CollectorResult(devices=devices, host_attributes={k: v for k, v in host.items() if v})

    def _read_gpu(self, index: int, known: dict[str, Any]) -> tuple[list[DeviceRecord], Any]:
        """The GPU at ``index`` and its MIG slices, and its handle (None if NVML cannot open it).

        Raises the device errors of NvmlQuery; ``known`` collects the GPU's identity as it
        is read, so that a GPU lost halfway is still reported under its uuid.
        """
        q, nvml = self.query, self.nvml
        handle = q("nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            return [self._unreadable_gpu(index, known, "NVML cannot open the GPU")], None
        uuid = to_str(q("nvmlDeviceGetUUID", handle))
        pci = q("nvmlDeviceGetPciInfo", handle)
        bus_id = normalize_bus_id(pci.busId) if pci is not None else None
        name = to_str(q("nvmlDeviceGetName", handle)) or ""
        uuid = uuid or (f"GPU-{bus_id}" if bus_id else f"GPU-index-{index}")
        known.update(uuid=uuid, name=name, bus_id=bus_id)
        self._uuid_by_index[index] = uuid

        memory = q("nvmlDeviceGetMemoryInfo", handle)
        capability = q("nvmlDeviceGetCudaComputeCapability", handle)
        power_mw = q("nvmlDeviceGetPowerUsage", handle)
        limit_mw = q("nvmlDeviceGetEnforcedPowerLimit", handle)
        temperature = q("nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU)
        utilization = q("nvmlDeviceGetUtilizationRates", handle)
        numa = q("nvmlDeviceGetNumaNodeId", handle)
        if numa is None or numa < 0:
            numa = pci_numa_node(self.sysfs_root, bus_id)
        mig_mode = q("nvmlDeviceGetMigMode", handle)
        mig_enabled = bool(mig_mode) and mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE
        remapped = self._remapped_rows(handle)
        minor = q("nvmlDeviceGetMinorNumber", handle)
        health, reason = self._health_of(uuid)
        if health == "ok" and remapped is not None and remapped["failure"]:
            health, reason = "unhealthy", "row remapping failed: the GPU has run out of spare memory rows"

        gpu = DeviceRecord(
            uuid=uuid,
            vendor="nvidia",
            kind="gpu",
            model=canonical_model(name) if name else "unknown",
            name=name,
            index=index,
            bus_id=bus_id,
            memory_total_mib=memory.total // MIB if memory is not None else None,
            memory_free_mib=memory.free // MIB if memory is not None else None,
            compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
            architecture=ARCHITECTURES.get(q("nvmlDeviceGetArchitecture", handle)),
            power_w=power_mw / 1000 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000 if limit_mw is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            utilization_pct=float(utilization.gpu) if utilization is not None else None,
            numa_node=numa,
            health=health,
            health_reason=reason,
            attributes={
                "mig_mode": mig_enabled,
                "mig_capable": mig_mode is not None,
                "serial": to_str(q("nvmlDeviceGetSerial", handle)),
                "ecc": self._ecc(handle),
                "remapped_rows": remapped,
                "processes": processes(q, handle),
                "minor": minor,
                "device_files": gpu_device_files(self.dev_root, minor),
            },
        )
        records = [gpu]
        if mig_enabled:
            if uuid not in self._profiles:
                self._profiles[uuid] = gpu_instance_profiles(q, handle)
            records += mig_slices(q, handle, gpu, self._profiles[uuid], self._health_of, self.dev_root)
        return records, handle

    def _unreadable_gpu(self, index: int, known: dict[str, Any], reason: str) -> DeviceRecord:
        """What is still known of a GPU NVML cannot read: it stays in the inventory, unhealthy."""
        uuid = known.get("uuid") or self._uuid_by_index.get(index) or f"GPU-unreadable-index-{index}"
        name = known.get("name") or ""
        log_once(log, logging.WARNING, f"nvidia-unreadable:{uuid}", "GPU %d (%s): %s", index, uuid, reason)
        return DeviceRecord(
            uuid=uuid, vendor="nvidia", kind="gpu", model=canonical_model(name) if name else "unknown",
            name=name, index=index, bus_id=known.get("bus_id"), health="unhealthy", health_reason=reason,
        )

    def _ecc(self, handle: Any) -> dict[str, Any] | None:
        q, nvml = self.query, self.nvml
        mode = q("nvmlDeviceGetEccMode", handle)
        if mode is None:
            return None
        counts: dict[str, Any] = {"enabled": bool(mode[0])}
        for counter, counter_name in ((nvml.NVML_VOLATILE_ECC, "volatile"), (nvml.NVML_AGGREGATE_ECC, "aggregate")):
            for kind, kind_name in ((nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, "corrected"),
                                    (nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected")):
                counts[f"{counter_name}_{kind_name}"] = q("nvmlDeviceGetTotalEccErrors", handle, kind, counter)
        return counts

    def _remapped_rows(self, handle: Any) -> dict[str, Any] | None:
        rows = self.query("nvmlDeviceGetRemappedRows", handle)
        if rows is None:
            return None
        corrected, uncorrected, pending, failure = rows
        return {"corrected": corrected, "uncorrected": uncorrected, "pending": bool(pending), "failure": bool(failure)}

    def _attach_topology(self, gpus: list[tuple[DeviceRecord, Any]]) -> None:
        """Fill ``nvlink`` and ``pcie`` on each readable GPU, reusing a recent reading."""
        key = tuple(record.uuid for record, _ in gpus)
        now = time.monotonic()
        cached = self._topology
        if cached is not None and cached[0] == key and now - cached[1] < self.topology_ttl_s:
            topology = cached[2]
        else:
            refs = [GpuRef(record.uuid, handle, record.bus_id) for record, handle in gpus]
            try:
                topology = read_topology(self.query, refs)
            except self.query.device_errors as err:
                log.warning("GPU topology skipped this pass: %s", err)
                return
            self._topology = (key, now, topology)
        for record, _ in gpus:
            record.attributes["nvlink"] = dict(topology.nvlink.get(record.uuid, {}))
            record.attributes["pcie"] = dict(topology.pcie.get(record.uuid, {}))
