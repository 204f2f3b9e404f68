"""Build a node's collectors and take its inventory.

What the agent calls::

    collectors = load_collectors(fake=None, enabled=None)   # list[Collector]
    inventory = collect(collectors)                         # Inventory
    watcher = make_health_watcher(collectors, on_event)     # XidWatcher | None
    watcher.start(); ...; watcher.stop()
    close_collectors(collectors)                            # at shutdown

``load_collectors`` builds the host collector, the NVIDIA collector and every plugin
registered under the entry-point group ``poold.collectors`` (ascend, xilinx, intel-fpga,
amd, and third-party ones). ``enabled`` keeps only the named collectors; the host
collector is always kept, since an inventory needs its node. A plugin that fails to
import or to build is reported as ``error: ...`` in ``Inventory.collectors`` and the rest
go on; so does a collector that raises during ``collect``.

With ``fake`` (a fixture name such as ``"hgx-h100-mig"`` or a fixture file's path) the
collectors run over the harness in :mod:`agents.fake`: the NVIDIA collector gets a
:class:`~agents.fake.FakeNvml`, the vendor plugins the fake executables, the host
collector the fixture's node. Plugins the fixture has no devices for report ``absent``.
With ``fake_root`` too, the harness makes the node's device files there and the collectors
name those (``attributes["device_files"]``); without it, fake devices name none.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from agents.collectors.base import Collector, CollectorResult, UnavailableCollector, describe
from agents.collectors.host import HostCollector
from agents.collectors.nvidia import NvidiaCollector
from poold_wire.records import DeviceRecord, HostRecord

if TYPE_CHECKING:
    from agents.fake import Fixture
    from agents.health import EventCallback, XidWatcher

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "poold.collectors"
BUILTIN_NAMES = ("host", "nvidia")


class Inventory(BaseModel):
    """What one inventory pass found: the host, its devices, and how each collector fared."""

    model_config = ConfigDict(extra="forbid")

    host: HostRecord
    devices: list[DeviceRecord] = Field(default_factory=list)
    collectors: dict[str, str] = Field(
        default_factory=dict, description="collector name -> 'ok', 'absent: why' or 'error: why'"
    )


def _plugins(enabled: set[str] | None, fixture: "Fixture | None", dev_root: str | None) -> list[Collector]:
    collectors: list[Collector] = []
    seen: set[str] = set()
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if entry.name in seen or entry.name in BUILTIN_NAMES or (enabled is not None and entry.name not in enabled):
            continue
        seen.add(entry.name)
        try:
            cls = entry.load()
        except Exception as err:  # a broken plugin must not stop the others
            log.warning("collector plugin %s (%s) failed to load: %s", entry.name, entry.value, describe(err))
            collectors.append(UnavailableCollector(entry.name, f"error: plugin {entry.value} failed to load "
                                                               f"({describe(err)})"))
            continue
        kwargs: dict[str, Any] = {}
        if fixture is not None:
            from agents.fake import plugin_kwargs

            found = plugin_kwargs(entry.name, fixture, dev_root)
            if found is None:
                collectors.append(UnavailableCollector(entry.name, f"absent: fake node {fixture.name} has no "
                                                                   f"{entry.name} devices"))
                continue
            kwargs = found
        try:
            collector = cls(**kwargs)
        except Exception as err:
            log.warning("collector plugin %s could not be built: %s", entry.name, describe(err))
            collectors.append(UnavailableCollector(entry.name, f"error: plugin could not be built ({describe(err)})"))
            continue
        if not isinstance(getattr(collector, "name", None), str) or not callable(getattr(collector, "collect", None)):
            collectors.append(UnavailableCollector(entry.name, "error: plugin is not a Collector (name, collect())"))
            continue
        collector.name = entry.name
        collectors.append(collector)
    return collectors


def load_collectors(fake: str | os.PathLike[str] | None = None, enabled: list[str] | None = None,
                    fake_root: str | os.PathLike[str] | None = None) -> list[Collector]:
    """The collectors of this node (or of fake node ``fake``, its device files under ``fake_root``), host first.

    ``enabled``: names to keep (``host``, ``nvidia``, and plugin names such as
    ``ascend``); None keeps all. An unknown name is reported as an ``error`` collector.
    """
    fixture = None
    dev_root: str | None = "/"
    if fake is not None:
        from agents.fake import FakeNvml, load_fixture, make_device_files

        fixture = load_fixture(fake)
        made = make_device_files(fixture, Path(fake_root)) if fake_root is not None else None
        dev_root = str(made) if made is not None else None
    wanted = set(enabled) if enabled is not None else None
    collectors: list[Collector] = [HostCollector(fixture.node if fixture else None,
                                                 sysfs_root=None if fixture else "/sys")]
    if wanted is None or "nvidia" in wanted:
        if fixture is not None:
            nvidia = NvidiaCollector(FakeNvml(fixture), sysfs_root=None, dev_root=dev_root)
        else:
            nvidia = NvidiaCollector()
        collectors.append(nvidia)
    collectors += _plugins(wanted, fixture, dev_root)
    if wanted is not None:
        known = {c.name for c in collectors}
        for name in sorted(wanted - known):
            collectors.append(UnavailableCollector(name, f"error: no collector named {name!r} is installed"))
    return collectors


def _fallback_host() -> HostRecord:
    import psutil

    return HostRecord(hostname=socket.gethostname(), cpu_cores=os.cpu_count() or 0,
                      memory_total_mib=psutil.virtual_memory().total // (1024 * 1024),
                      attributes={"host_collector": "failed"})


def outside_memory_mib(device: DeviceRecord) -> int | None:
    """Device memory in use by processes that are not poold jobs: what the device reports used,
    less what processes carrying a ``POOLD_JOB_ID`` use. None when the device does not say."""
    if device.memory_total_mib is None or device.memory_free_mib is None:
        return None
    used = device.memory_total_mib - device.memory_free_mib
    ours = 0
    for entry in device.attributes.get("processes") or []:
        if not entry.get("used_memory_mib"):
            continue
        try:
            if "POOLD_JOB_ID" in psutil.Process(int(entry["pid"])).environ():
                ours += int(entry["used_memory_mib"])
        except (psutil.Error, OSError, ValueError, TypeError, KeyError):
            continue
    return max(0, used - ours)


def collect(collectors: Iterable[Collector]) -> Inventory:
    """One inventory pass: every collector in turn, each failure kept to its own status.

    A device uuid reported twice keeps its first record (and logs the duplicate). Each device
    gets the memory used by processes that are not poold jobs (``outside_memory_mib``).
    """
    host: HostRecord | None = None
    host_attributes: dict[str, Any] = {}
    devices: list[DeviceRecord] = []
    seen: set[str] = set()
    statuses: dict[str, str] = {}
    for collector in collectors:
        try:
            result = collector.collect()
            if not isinstance(result, CollectorResult):
                raise TypeError(f"collect() returned {type(result).__name__}, not CollectorResult")
        except Exception as err:
            log.exception("collector %s failed", collector.name)
            statuses[collector.name] = f"error: {describe(err)}"
            continue
        statuses[collector.name] = result.status
        host = result.host or host
        host_attributes.update(result.host_attributes)
        for device in result.devices:
            if device.uuid in seen:
                log.warning("collector %s reported device %s again; keeping the first", collector.name, device.uuid)
                continue
            seen.add(device.uuid)
            devices.append(device.model_copy(update={"memory_outside_mib": outside_memory_mib(device)}))
    host = host or _fallback_host()
    if host_attributes:
        host = host.model_copy(update={"attributes": {**host.attributes, **host_attributes}})
    return Inventory(host=host, devices=devices, collectors=statuses)


def make_health_watcher(collectors: Iterable[Collector], on_event: "EventCallback", **options: Any) -> "XidWatcher | None":
    """An XID watcher over the NVIDIA collector's NVML, or None when there is no usable NVML.

    Each event first marks the device unhealthy in the collector (so later inventories
    keep reporting it), then calls ``on_event(uuid, xid, reason)``. ``options`` go to
    :class:`~agents.health.XidWatcher` (``wait_ms``, ``ignored_xids``). Not started.
    """
    from agents.health import XidWatcher

    nvidia = next((c for c in collectors if isinstance(c, NvidiaCollector)), None)
    if nvidia is None or nvidia.start() is not None:
        return None

    def mark_then_report(uuid: str, xid: int, reason: str) -> None:
        nvidia.mark_unhealthy(uuid, reason)
        on_event(uuid, xid, reason)

    return XidWatcher(nvidia.nvml, mark_then_report, **options)


def close_collectors(collectors: Iterable[Collector]) -> None:
    """Release what collectors hold (NVML, amdsmi); safe to call more than once."""
    for collector in collectors:
        close = getattr(collector, "close", None)
        if callable(close):
            try:
                close()
            except Exception as err:
                log.warning("closing collector %s: %s", collector.name, describe(err))
