"""Shared pieces for the agent tests: a fake daemon and an agent over it (the loop tests); a
fake-state directory, inventories of fake nodes, fixture files written on the fly, and live
processes to claim fake devices with (the collector tests)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agents.fake import STATE_ENV
from agents.inventory import Inventory, close_collectors, collect, load_collectors
from poold_wire.records import DeviceRecord
from tests.agents.agent_harness import Harness
from tests.agents.cgroup_support import fresh_parent
from tests.agents.fake_daemon import FakeDaemon


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon(heartbeat_interval_s=0.2)


@pytest.fixture
def harness(tmp_path: Path, daemon: FakeDaemon) -> Iterator[Harness]:
    h = Harness(tmp_path / "agent", daemon)
    yield h
    h.stop()
    # Nothing a test started may outlive it.
    for state_file in (tmp_path / "agent" / "jobs").glob("*/shim.json"):
        try:
            psutil.Process(int(state_file.read_text().split('"pid": ')[1].split(",")[0])).kill()
        except (psutil.Error, IndexError, ValueError):
            pass


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A cgroup parent name of this test's own (``poold-test-…``), removed with its job cgroups at the end."""
    yield from fresh_parent()


@pytest.fixture
def fake_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$POOLD_FAKE_STATE`` directory for this test."""
    state = tmp_path / "fake-state"
    state.mkdir()
    monkeypatch.setenv(STATE_ENV, str(state))
    return state


@pytest.fixture
def inventory_of(fake_state: Path) -> Callable[..., Inventory]:
    """``inventory_of("hgx-h100-mig")``: one inventory pass over a fake node."""

    def take(fixture: str | Path, enabled: list[str] | None = None) -> Inventory:
        collectors = load_collectors(fake=str(fixture), enabled=enabled)
        try:
            return collect(collectors)
        finally:
            close_collectors(collectors)

    return take


@pytest.fixture
def write_fixture(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_fixture("name", toml_text)``: a fixture file in this test's directory."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process that lives for the length of the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has already exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def devices_by_uuid(inventory: Inventory) -> dict[str, DeviceRecord]:
    return {device.uuid: device for device in inventory.devices}


def gpus(inventory: Inventory) -> list[DeviceRecord]:
    """Whole NVIDIA GPUs (not MIG slices), in index order."""
    return sorted((d for d in inventory.devices if d.vendor == "nvidia" and d.parent_uuid is None),
                  key=lambda d: d.index if d.index is not None else -1)
