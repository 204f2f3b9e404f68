"""The agent's ``/metrics``: its node's devices for Prometheus, named as NVIDIA's dcgm-exporter
names them where it has a name.

Served by ``prometheus_client``'s own HTTP server on a thread of its own when the agent's
``metrics_listen`` is set (off by default). A scrape reads what the agent's loop last
collected (its latest inventory, the XIDs its health watcher saw, the jobs its runner holds):
it never calls a driver itself.

Every series carries the labels of dcgm-exporter — ``gpu`` (the device's index; a MIG slice
has its GPU's), ``UUID``, ``device`` (``nvidia0``; ``npu0``, ``fpga1`` for other kinds),
``Hostname``, ``model_name`` (dcgm-exporter's ``modelName``: Prometheus' linter refuses
camelCase label names), ``GPU_I_PROFILE`` (a MIG slice's profile) — and poold's: ``kind``,
``model`` (the canonical model the daemon's metrics use), ``poold_job`` (the job holding the
device, empty when none), so that per-job device use can be graphed as dcgm-exporter maps pods.

GPUs (any vendor) report as dcgm-exporter does: ``DCGM_FI_DEV_GPU_UTIL`` (%),
``DCGM_FI_DEV_FB_USED`` and ``DCGM_FI_DEV_FB_FREE`` (MiB), ``DCGM_FI_DEV_POWER_USAGE`` (W),
``DCGM_FI_DEV_GPU_TEMP`` (°C), ``DCGM_FI_DEV_XID_ERRORS`` (the last XID seen, 0: none).
NPUs and FPGAs, which DCGM does not know, report ``poold_device_utilization_ratio`` (0..1),
``poold_device_memory_used_bytes``, ``poold_device_memory_free_bytes``,
``poold_device_power_watts``, ``poold_device_temperature_celsius``. Every device reports
``poold_device_healthy`` (1 or 0). A figure the hardware cannot give is left out, never 0.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from agents import __version__

if TYPE_CHECKING:  # the collectors load with the agent, not with its settings
    from agents.inventory import Inventory

log = logging.getLogger(__name__)

LABELS = ["gpu", "UUID", "device", "Hostname", "model_name", "GPU_I_PROFILE", "kind", "model", "poold_job"]
MIB = 2**20

# (name, help, the DeviceRecord figure, factor): GPUs, in dcgm-exporter's names and units.
GPU_FIGURES = [
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization_pct", 1.0),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "memory_used_mib", 1.0),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "memory_free_mib", 1.0),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w", 1.0),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c", 1.0),
]
# NPUs, FPGAs and any other kind DCGM does not know: poold's names, in base units.
OTHER_FIGURES = [
    ("poold_device_utilization_ratio", "Utilization of an NPU or FPGA, 0..1.", "utilization_pct", 0.01),
    ("poold_device_memory_used_bytes", "Device memory used, bytes (NPUs and FPGAs).", "memory_used_mib", MIB),
    ("poold_device_memory_free_bytes", "Device memory free, bytes (NPUs and FPGAs).", "memory_free_mib", MIB),
    ("poold_device_power_watts", "Power draw, watts (NPUs and FPGAs).", "power_w", 1.0),
    ("poold_device_temperature_celsius", "Temperature, degrees Celsius (NPUs and FPGAs).", "temperature_c", 1.0),
]


@dataclass(frozen=True)
class NodeView:
    """What a scrape reads: the latest inventory, the last XID per device uuid, the job
    holding each device uuid, and how many jobs the agent runs."""

    inventory: Inventory | None
    xids: Mapping[str, int]
    holders: Mapping[str, int]
    running_jobs: int


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9471`` for IPv6) as a pair; ValueError saying what is wrong."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT (a port 0-65535), e.g. 0.0.0.0:9471 or [::]:9471; got {value!r}")
    if ":" in host:
        ipaddress.IPv6Address(host)
    return host, int(port)


class DeviceCollector(Collector):
    """The families above over ``view()`` (see the module docstring)."""

    def __init__(self, view: Callable[[], NodeView]):
        self.view = view

    def _families(self) -> list[GaugeMetricFamily]:
        names = [*GPU_FIGURES, *OTHER_FIGURES,
                 ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered (0: none).", "", 1.0),
                 ("poold_device_healthy", "1 when the agent reports the device healthy, else 0.", "", 1.0)]
        return [GaugeMetricFamily(name, text, labels=LABELS) for name, text, _, _ in names]

    def collect(self) -> Iterator[Any]:
        view = self.view()
        families = {family.name: family for family in self._families()}
        running = GaugeMetricFamily("poold_agent_running_jobs", "Jobs the agent runs now (including ones being stopped).")
        running.add_metric([], view.running_jobs)
        info = GaugeMetricFamily("poold_agent_build_info", "The agent's version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        devices = view.inventory.devices if view.inventory is not None else []
        by_uuid = {device.uuid: device for device in devices}
        hostname = view.inventory.host.hostname if view.inventory is not None else ""
        for device in devices:
            parent = by_uuid.get(device.parent_uuid) if device.parent_uuid else None
            index = device.index if device.index is not None else (parent.index if parent is not None else None)
            name = "nvidia" if device.vendor == "nvidia" and device.kind == "gpu" else device.kind
            job = view.holders.get(device.uuid)
            labels = ["" if index is None else str(index), device.uuid, "" if index is None else f"{name}{index}", hostname,
                      device.name or device.model, str(device.attributes.get("mig_profile") or ""), device.kind, device.model,
                      "" if job is None else str(job)]
            figures = {
                "utilization_pct": device.utilization_pct, "memory_free_mib": device.memory_free_mib,
                "power_w": device.power_w, "temperature_c": device.temperature_c,
                "memory_used_mib": (device.memory_total_mib - device.memory_free_mib
                                    if device.memory_total_mib is not None and device.memory_free_mib is not None else None),
            }
            for metric, _, figure, factor in GPU_FIGURES if device.kind == "gpu" else OTHER_FIGURES:
                if figures[figure] is not None:
                    families[metric].add_metric(labels, figures[figure] * factor)
            if device.kind == "gpu" and device.parent_uuid is None:
                families["DCGM_FI_DEV_XID_ERRORS"].add_metric(labels, view.xids.get(device.uuid, 0))
            families["poold_device_healthy"].add_metric(labels, 1 if device.health == "ok" else 0)
        yield from families.values()
        yield running
        yield info


class MetricsServer:
    """The agent's ``/metrics`` HTTP server (``prometheus_client``'s, on a daemon thread)."""

    def __init__(self, listen: str, view: Callable[[], NodeView]):
        self.host, self.port = parse_listen(listen)
        self.registry = CollectorRegistry()
        self.registry.register(DeviceCollector(view))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server, self._thread = start_http_server(self.port, self.host, registry=self.registry)
        self.port = self._server.server_port  # the port taken when 0 was asked

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_metrics(listen: str | None, view: Callable[[], NodeView]) -> MetricsServer | None:
    """``/metrics`` started where ``listen`` says (None: not at all). One that cannot listen is
    logged and the agent runs without it: its jobs matter more than its figures."""
    if not listen:
        return None
    server = MetricsServer(listen, view)
    try:
        server.start()
    except OSError as exc:
        log.error("metrics_listen %s: cannot listen (%s); serving no metrics", listen, exc.strerror or exc)
        return None
    log.info("serving this node's device metrics on http://%s:%d/metrics", server.host, server.port)
    return server
