"""XID events: the watcher calls back at once and later inventories keep the device unhealthy."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from agents.collectors.base import UnavailableCollector
from agents.fake import FakeNvml, inject_xid, load_fixture
from agents.health import XidWatcher, xid_reason
from agents.inventory import close_collectors, collect, load_collectors, make_health_watcher
from tests.agents.conftest import devices_by_uuid

A100_GPU3 = "GPU-3f1a68e2-dc7c-5f22-a76e-f7c7fbb6ffd2"
H100_GPU0 = "GPU-59e7bc1f-2755-5a1a-95c9-aa824ff2e686"
H100_GPU5 = "GPU-c5302b35-0a36-5bdb-9e2e-df7b37217526"
H100_SLICE = "MIG-44dfed45-b5dc-5f14-9820-48c616ad510f"


@pytest.fixture
def events() -> queue.Queue:
    return queue.Queue()


def _watch(fixture: str, events: queue.Queue, **options):
    collectors = load_collectors(fake=fixture)
    watcher = make_health_watcher(collectors, lambda *event: events.put(event), wait_ms=20, **options)
    assert watcher is not None
    watcher.start()
    return collectors, watcher


def test_xid79_scenario_reaches_the_callback_and_the_inventory(fake_state: Path, events: queue.Queue) -> None:
    collectors, watcher = _watch("xid79", events)
    try:
        uuid, xid, reason = events.get(timeout=2)
        assert (uuid, xid) == (A100_GPU3, 79)
        assert reason == "XID 79: GPU has fallen off the bus"
        devices = devices_by_uuid(collect(collectors))
        assert devices[A100_GPU3].health == "unhealthy"
        assert devices[A100_GPU3].health_reason == reason
        assert [d.health for u, d in devices.items() if u != A100_GPU3] == ["ok"] * 3
    finally:
        watcher.stop()
        close_collectors(collectors)


def test_injected_xids_mark_devices_until_told_otherwise(fake_state: Path, events: queue.Queue) -> None:
    collectors, watcher = _watch("hgx-h100-mig", events)
    try:
        inject_xid(H100_GPU5, 48)
        assert events.get(timeout=2) == (H100_GPU5, 48, "XID 48: double-bit ECC error")
        inject_xid(H100_SLICE, 94)  # an event on a slice is reported on its GPU
        assert events.get(timeout=2)[:2] == (H100_GPU0, 94)
        for _ in range(2):  # remembered, not a one-off
            devices = devices_by_uuid(collect(collectors))
            assert devices[H100_GPU5].health == "unhealthy"
            assert devices[H100_SLICE].health == "unhealthy"
            assert H100_GPU0 in devices[H100_SLICE].health_reason
        assert sum(d.health == "ok" for d in devices.values()) == 6
    finally:
        watcher.stop()
        close_collectors(collectors)


def test_application_xids_are_ignored_unless_asked(fake_state: Path, events: queue.Queue) -> None:
    collectors, watcher = _watch("hgx-h100-mig", events)
    try:
        inject_xid(H100_GPU5, 13)  # a graphics exception: the application's fault
        inject_xid(H100_GPU5, 63)
        assert events.get(timeout=2)[:2] == (H100_GPU5, 63)
        time.sleep(0.1)
        assert events.empty()
    finally:
        watcher.stop()
        close_collectors(collectors)
    collectors, watcher = _watch("hgx-h100-mig", events, ignored_xids=())
    try:
        inject_xid(H100_GPU5, 13)
        assert events.get(timeout=2) == (H100_GPU5, 13, "XID 13: critical XID error")
    finally:
        watcher.stop()
        close_collectors(collectors)


def test_watcher_stops_promptly_and_releases_nvml(fake_state: Path) -> None:
    nvml = FakeNvml(load_fixture("a100-4"))
    watcher = XidWatcher(nvml, lambda *event: None, wait_ms=100)
    watcher.start()
    assert watcher.running and len(watcher.registered) == 4
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0  # one 100 ms wait, not the 2 s join timeout
    assert not watcher.running
    with pytest.raises(nvml.NVMLError_Uninitialized):  # the watcher's own NVML reference is gone
        nvml.nvmlDeviceGetCount()


def test_a_failing_callback_does_not_stop_the_watcher(fake_state: Path) -> None:
    seen: list[int] = []

    def flaky(uuid: str, xid: int, reason: str) -> None:
        seen.append(xid)
        if len(seen) == 1:
            raise RuntimeError("agent busy")

    watcher = XidWatcher(FakeNvml(load_fixture("hgx-h100-mig")), flaky, wait_ms=20)
    with watcher:
        for xid, count in ((48, 1), (64, 2)):
            inject_xid(H100_GPU5, xid)
            deadline = time.monotonic() + 2
            while len(seen) < count and time.monotonic() < deadline:
                time.sleep(0.01)
    assert seen == [48, 64]


def test_no_watcher_without_nvml(fake_state: Path) -> None:
    assert make_health_watcher(load_collectors(fake="no-driver"), lambda *event: None) is None
    assert make_health_watcher([UnavailableCollector("nvidia", "absent: x")], lambda *event: None) is None


def test_xid_reasons() -> None:
    assert xid_reason(48) == "XID 48: double-bit ECC error"
    assert xid_reason(64) == "XID 64: ECC page retirement or row remapping failed"
    assert xid_reason(999) == "XID 999: critical XID error"
