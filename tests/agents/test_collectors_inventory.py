"""load_collectors / collect: the registry, filtering, and failures kept to their collector."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest

from agents.collectors.base import Collector, CollectorResult, UnavailableCollector, log_once
from agents.collectors.host import HostCollector
from agents.collectors.nvidia import NvidiaCollector
from agents.fake.fixture_file import fixture_names
from agents.inventory import Inventory, collect, load_collectors
from poold_wire.messages import RegisterRequest
from poold_wire.records import DeviceRecord


def test_registry_holds_every_builtin_collector(fake_state: Path) -> None:
    collectors = load_collectors(fake="t4")
    assert [c.name for c in collectors] == ["host", "nvidia", "amd", "ascend", "intel-fpga", "xilinx"]
    assert all(isinstance(c, Collector) for c in collectors)
    assert isinstance(collectors[0], HostCollector) and isinstance(collectors[1], NvidiaCollector)


def test_real_node_without_accelerators() -> None:
    inventory = collect(load_collectors())
    assert inventory.collectors["host"] == "ok"
    assert inventory.host.cpu_cores > 0
    # This machine has no accelerators; whatever is missing says so instead of failing.
    for name in ("nvidia", "ascend", "xilinx", "intel-fpga", "amd"):
        assert inventory.collectors[name].split(":")[0] in ("ok", "absent")


def test_enabled_keeps_the_named_collectors_and_the_host(fake_state: Path) -> None:
    collectors = load_collectors(fake="ascend-910b-8", enabled=["ascend", "tpu"])
    assert [c.name for c in collectors] == ["host", "ascend", "tpu"]
    inventory = collect(collectors)
    assert inventory.collectors["tpu"] == "error: no collector named 'tpu' is installed"
    assert len(inventory.devices) == 8


def test_fake_fixture_by_path(inventory_of, write_fixture) -> None:
    path = write_fixture("renamed", """
        extends = "l4-2"
        [node]
        hostname = "l4-renamed"
        """)
    inventory = inventory_of(path)
    assert inventory.host.hostname == "l4-renamed" and len(inventory.devices) == 2


def test_a_plugin_that_fails_to_import_does_not_stop_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inventory_of) -> None:
    dist = tmp_path / "poold_broken_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: poold-broken-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [poold.collectors]
        gone = poold_no_such_module:Collector
        crashes = poold_crashing_plugin:Collector
        """))
    (tmp_path / "poold_crashing_plugin.py").write_text("raise RuntimeError('vendor SDK missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    inventory = inventory_of("hgx-h100-mig")
    assert inventory.collectors["gone"].startswith("error: plugin poold_no_such_module:Collector failed to load "
                                                   "(ModuleNotFoundError")
    assert inventory.collectors["crashes"] == ("error: plugin poold_crashing_plugin:Collector failed to load "
                                               "(RuntimeError: vendor SDK missing)")
    assert inventory.collectors["nvidia"] == "ok" and len(inventory.devices) == 12


class _Raising:
    name = "flaky"

    def collect(self) -> CollectorResult:
        raise OSError("device file vanished")


class _Static:
    def __init__(self, name: str, *uuids: str):
        self.name = name
        self.uuids = uuids

    def collect(self) -> CollectorResult:
        return CollectorResult(devices=[DeviceRecord(uuid=u, vendor="intel", kind="fpga", model="PAC D5005")
                                        for u in self.uuids], host_attributes={self.name: "yes"})


def test_a_raising_collector_is_an_error_and_the_rest_go_on() -> None:
    inventory = collect([_Raising(), _Static("one", "FPGA-a", "FPGA-b"), _Static("two", "FPGA-b", "FPGA-c")])
    assert inventory.collectors == {"flaky": "error: OSError: device file vanished", "one": "ok", "two": "ok"}
    assert [d.uuid for d in inventory.devices] == ["FPGA-a", "FPGA-b", "FPGA-c"]  # a duplicate kept once
    assert inventory.host.hostname  # no host collector: this machine, flagged
    assert inventory.host.attributes == {"host_collector": "failed", "one": "yes", "two": "yes"}


def test_inventory_round_trips_as_json(inventory_of) -> None:
    inventory = inventory_of("hgx-h100-mig")
    again = Inventory.model_validate_json(inventory.model_dump_json())
    assert again == inventory
    assert again.devices[0].attributes["nvlink"][again.devices[5].uuid] == 18


def test_unavailable_collector_repeats_its_status() -> None:
    stub = UnavailableCollector("gone", "error: x")
    assert stub.collect().status == stub.collect().status == "error: x"


def test_log_once_logs_a_key_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.log_once")
    key = f"test-{id(caplog)}"
    with caplog.at_level(logging.INFO, logger="tests.log_once"):
        for _ in range(3):
            log_once(logger, logging.INFO, key, "NVML unavailable: %s", "LibraryNotFound")
    assert [r.getMessage() for r in caplog.records] == ["NVML unavailable: LibraryNotFound"]


def test_memory_used_outside_poold_is_what_is_used_less_what_poold_jobs_use(fake_state: Path) -> None:
    """GPU 1 of the HGX fixture shows 64,512 MiB used by no process NVML lists: all of it is
    outside poold. On GPU 2 a job of ours (it carries POOLD_JOB_ID) uses 20,000 MiB and a
    foreign process 5,000 MiB: only the 5,000 MiB is outside."""
    import os
    import subprocess

    from agents.fake import claim_device

    env = {key: value for key, value in os.environ.items() if key != "POOLD_JOB_ID"}
    ours = subprocess.Popen(["sleep", "30"], env={**env, "POOLD_JOB_ID": "5"})
    theirs = subprocess.Popen(["sleep", "30"], env=env)
    try:
        gpu1, gpu2 = "GPU-c1915abc-0a51-59b3-9d41-ae7a171796f2", "GPU-ac7d0a14-0381-56f2-8e36-ef499156be4e"
        claim_device(gpu2, ours.pid, 20000, state=fake_state)
        claim_device(gpu2, theirs.pid, 5000, state=fake_state)
        devices = {d.uuid: d for d in collect(load_collectors(fake="hgx-h100-mig")).devices}
        assert devices[gpu1].memory_outside_mib == 64512
        assert devices[gpu2].memory_free_mib == 81559 - 25000
        assert devices[gpu2].memory_outside_mib == 5000
        assert devices["GPU-9d30ea10-3aa7-5ac0-b5db-e95eab708205"].memory_outside_mib == 0
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait()


@pytest.mark.parametrize("fixture", fixture_names())
def test_every_fake_node_passes_the_daemons_door(inventory_of, fixture: str) -> None:
    """What the collectors report (topology and all, filled in after the records were built)
    is what the daemon accepts: sent as JSON, it validates as a RegisterRequest."""
    inventory = inventory_of(fixture)
    body = {
        "node": "n1",
        "host": inventory.host.model_dump(mode="json"),
        "devices": [device.model_dump(mode="json") for device in inventory.devices],
    }
    request = RegisterRequest.model_validate(json.loads(json.dumps(body)))
    assert len(request.devices) == len(inventory.devices)
