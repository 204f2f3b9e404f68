"""The host collector: this machine through psutil and sysfs, or a fake fixture's node."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil
import pytest

from agents.collectors.host import HostCollector, parse_cpulist, read_numa_nodes

MIB = 1024 * 1024


def test_this_machine() -> None:
    result = HostCollector().collect()
    host = result.host
    assert result.status == "ok" and result.devices == []
    assert host.hostname == socket.gethostname()
    assert host.cpu_cores == psutil.cpu_count(logical=True)
    assert abs(host.memory_total_mib - psutil.virtual_memory().total // MIB) <= 1
    assert 0 <= host.memory_available_mib <= host.memory_total_mib
    assert host.load_1m == pytest.approx(os.getloadavg()[0], abs=5.0)
    assert host.numa_nodes == read_numa_nodes("/sys")
    assert host.attributes["kernel"] == os.uname().release
    assert host.attributes["os"]


def test_numa_layout_from_sysfs(tmp_path: Path) -> None:
    for node, cpus in (("node0", "0-3,8-11\n"), ("node1", "4-7,12-15\n"), ("node10", "16\n")):
        (tmp_path / "devices/system/node" / node).mkdir(parents=True)
        (tmp_path / "devices/system/node" / node / "cpulist").write_text(cpus)
    (tmp_path / "devices/system/node/possible").write_text("0-1\n")
    assert read_numa_nodes(str(tmp_path)) == {"0": [0, 1, 2, 3, 8, 9, 10, 11], "1": [4, 5, 6, 7, 12, 13, 14, 15],
                                              "10": [16]}
    assert read_numa_nodes(str(tmp_path / "missing")) == {}
    assert read_numa_nodes(None) == {}


@pytest.mark.parametrize("text, cpus", [("0-3,8,10-11", [0, 1, 2, 3, 8, 10, 11]), ("5", [5]), ("", []),
                                        ("0-1\n", [0, 1])])
def test_parse_cpulist(text: str, cpus: list[int]) -> None:
    assert parse_cpulist(text) == cpus


def test_fake_node_is_reported_instead_of_this_machine(inventory_of) -> None:
    host = inventory_of("hgx-h100-mig").host
    assert (host.hostname, host.cpu_cores, host.memory_total_mib) == ("hgx-h100-01", 224, 2063937)
    assert (host.memory_available_mib, host.load_1m) == (1981440, 3.25)
    assert host.numa_nodes["0"] == list(range(0, 56)) + list(range(112, 168))
    assert len(host.numa_nodes["1"]) == 112
    assert host.attributes["os"] == "Ubuntu 22.04.4 LTS" and host.attributes["fake"] is True
