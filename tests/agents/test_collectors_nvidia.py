"""The NVIDIA collector over the fake NVML: each fixture's inventory matches the fixture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agents.collectors.nvidia import NvidiaCollector, canonical_model, cuda_version_text
from agents.fake import FakeNvml, claim_device, load_fixture
from tests.agents.conftest import devices_by_uuid, gpus

H100_UUIDS = [
    "GPU-59e7bc1f-2755-5a1a-95c9-aa824ff2e686", "GPU-c1915abc-0a51-59b3-9d41-ae7a171796f2",
    "GPU-ac7d0a14-0381-56f2-8e36-ef499156be4e", "GPU-9d30ea10-3aa7-5ac0-b5db-e95eab708205",
    "GPU-5d5c70cc-08bb-5a45-a8c0-7816f92c6157", "GPU-c5302b35-0a36-5bdb-9e2e-df7b37217526",
    "GPU-9b00f6d6-c358-5a37-9134-6c34a76b2c9c", "GPU-c2d505f2-dec3-5d0a-9b06-662fea22fa57",
]
SLICE_3G = "MIG-7913e777-75eb-5321-b058-65181fe0368b"


def test_hgx_h100_gpus(inventory_of) -> None:
    inventory = inventory_of("hgx-h100-mig")
    assert inventory.collectors["nvidia"] == "ok"
    assert inventory.host.attributes["driver_version"] == "550.54.15"
    assert inventory.host.attributes["cuda_version"] == "12.4"
    found = gpus(inventory)
    assert [g.uuid for g in found] == H100_UUIDS
    for index, gpu in enumerate(found):
        assert (gpu.model, gpu.name, gpu.index) == ("H100", "NVIDIA H100 80GB HBM3", index)
        assert (gpu.memory_total_mib, gpu.compute_capability, gpu.architecture) == (81559, "9.0", "Hopper")
        assert gpu.power_limit_w == 700.0
        assert gpu.numa_node == (0 if index < 4 else 1)
        assert gpu.health == "ok"
    assert found[1].bus_id == "0000:2a:00.0"
    assert (found[1].power_w, found[1].utilization_pct, found[1].temperature_c) == (612.3, 87.0, 58.0)
    assert found[1].memory_free_mib == 81559 - 64512
    assert found[0].utilization_pct is None  # NotSupported on a MIG-enabled GPU
    assert [g.attributes["mig_mode"] for g in found] == [True] + [False] * 7


def test_hgx_h100_topology(inventory_of) -> None:
    found = gpus(inventory_of("hgx-h100-mig"))
    for gpu in found:
        peers = [p for p in H100_UUIDS if p != gpu.uuid]
        assert gpu.attributes["nvlink"] == {peer: 18 for peer in peers}
        same_socket = {p for p in peers if (H100_UUIDS.index(p) < 4) == (gpu.index < 4)}
        assert gpu.attributes["pcie"] == {p: "same_numa" if p in same_socket else "system" for p in peers}


def test_hgx_h100_mig_slices(inventory_of) -> None:
    inventory = inventory_of("hgx-h100-mig")
    slices = [d for d in inventory.devices if d.parent_uuid is not None]
    assert {s.parent_uuid for s in slices} == {H100_UUIDS[0]}
    by_profile = sorted((s.attributes["mig_profile"], s.memory_total_mib, s.attributes["mig_slices"],
                         s.attributes["mig_gi_id"]) for s in slices)
    assert by_profile == [("1g.10gb", 9984, 1, 9), ("1g.10gb", 9984, 1, 10), ("2g.20gb", 20096, 2, 3),
                          ("3g.40gb", 40448, 3, 2)]
    assert sum(s.attributes["mig_slices"] for s in slices) == 7
    for s in slices:
        assert s.uuid.startswith("MIG-")
        assert (s.model, s.kind, s.bus_id, s.numa_node) == ("H100", "gpu", "0000:18:00.0", 0)
        assert s.attributes["mig_ci_id"] == 0
        assert s.health == "ok"
    assert len(inventory.devices) == 8 + 4


def test_a100_node(inventory_of) -> None:
    found = gpus(inventory_of("a100-4"))
    assert [g.model for g in found] == ["A100"] * 4
    assert {g.memory_total_mib for g in found} == {81920}
    assert found[0].attributes["nvlink"] == {found[i].uuid: 12 for i in (1, 2, 3)}
    assert found[0].attributes["pcie"] == {found[1].uuid: "single_switch", found[2].uuid: "system",
                                           found[3].uuid: "system"}
    assert all(g.attributes["mig_capable"] and not g.attributes["mig_mode"] for g in found)
    assert found[0].attributes["remapped_rows"] == {"corrected": 0, "uncorrected": 0, "pending": False,
                                                    "failure": False}


def test_l4_and_t4_have_no_nvlink_and_no_mig(inventory_of) -> None:
    l4 = gpus(inventory_of("l4-2"))
    assert [(g.model, g.architecture, g.compute_capability, g.power_limit_w) for g in l4] == [
        ("L4", "Ada", "8.9", 72.0)] * 2
    assert l4[0].attributes["nvlink"] == {} and l4[0].attributes["pcie"] == {l4[1].uuid: "same_numa"}
    assert not l4[0].attributes["mig_capable"] and not l4[0].attributes["mig_mode"]
    (t4,) = gpus(inventory_of("t4"))
    assert (t4.model, t4.architecture, t4.memory_total_mib, t4.numa_node) == ("T4", "Turing", 15360, None)
    assert t4.attributes["remapped_rows"] is None  # Turing has no row remapper


def test_lost_gpu_is_unhealthy_and_the_rest_report(inventory_of) -> None:
    inventory = inventory_of("lost-gpu")
    assert inventory.collectors["nvidia"] == "ok"
    found = gpus(inventory)
    assert [g.health for g in found] == ["ok", "ok", "unhealthy", "ok"]
    lost = found[2]
    assert lost.uuid == "GPU-c213c5d4-1132-5921-bd83-2415269b8d43"
    assert lost.bus_id == "0000:48:00.0" and lost.model == "A100"
    assert "lost" in lost.health_reason and lost.memory_total_mib is None
    assert found[3].memory_total_mib == 81920
    assert lost.uuid not in found[0].attributes["nvlink"]


def test_gpu_without_a_handle_is_still_reported(inventory_of, write_fixture) -> None:
    path = write_fixture("lost-handle", """
        extends = "a100-4"
        [faults]
        lost = [{ gpu = 1, stage = "handle" }]
        """)
    found = gpus(inventory_of(path))
    assert len(found) == 4
    assert (found[1].uuid, found[1].health, found[1].index) == ("GPU-unreadable-index-1", "unhealthy", 1)


def test_not_supported_everywhere_gives_none(inventory_of) -> None:
    inventory = inventory_of("not-supported")
    assert inventory.collectors["nvidia"] == "ok"
    assert "cuda_version" not in inventory.host.attributes
    for gpu in gpus(inventory):
        assert gpu.memory_total_mib == 81920 and gpu.model == "A100"
        assert (gpu.temperature_c, gpu.power_w, gpu.power_limit_w, gpu.utilization_pct) == (None,) * 4
        assert (gpu.compute_capability, gpu.architecture, gpu.numa_node) == (None, None, None)
        attributes = gpu.attributes
        assert (attributes["ecc"], attributes["remapped_rows"], attributes["processes"]) == (None, None, None)
        assert attributes["nvlink"] == {} and attributes["pcie"] == {}
        assert attributes["mig_mode"] is False and gpu.health == "ok"


def test_no_driver_is_absent(inventory_of) -> None:
    collector = NvidiaCollector(FakeNvml(load_fixture("no-driver")), sysfs_root=None)
    first, second = collector.collect(), collector.collect()
    assert first.status.startswith("absent: ") and "LibraryNotFound" in first.status
    assert second.status == first.status and first.devices == []
    inventory = inventory_of("no-driver")
    assert inventory.devices == [] and inventory.collectors["nvidia"].startswith("absent")
    assert inventory.host.hostname == "t4-no-driver"


def test_claimed_gpus_report_their_processes(inventory_of, fake_state: Path, live_pid: int) -> None:
    claim_device(H100_UUIDS[3], live_pid, used_mib=30000)
    claim_device(SLICE_3G, live_pid, used_mib=1000)
    devices = devices_by_uuid(inventory_of("hgx-h100-mig"))
    assert devices[H100_UUIDS[3]].attributes["processes"] == [{"pid": live_pid, "used_memory_mib": 30000}]
    assert devices[H100_UUIDS[3]].memory_free_mib == 81559 - 30000
    assert devices[SLICE_3G].attributes["processes"] == [{"pid": live_pid, "used_memory_mib": 1000}]
    assert devices[H100_UUIDS[0]].attributes["processes"] == [{"pid": live_pid, "used_memory_mib": 1000}]
    assert devices[H100_UUIDS[2]].attributes["processes"] == []


def test_profile_names_without_profile_info(inventory_of, write_fixture) -> None:
    # A driver that cannot list profiles: names are rebuilt from slices and memory.
    path = write_fixture("a100-40-mig", """
        extends = "t4"
        [faults]
        not_supported = ["nvmlDeviceGetGpuInstanceProfileInfo"]
        [[nvidia.gpus]]
        uuid = "GPU-00000000-0000-0000-0000-0000000000a1"
        name = "NVIDIA A100-SXM4-40GB"
        bus_id = "00000000:07:00.0"
        memory_mib = 40960
        architecture = 7
        mig_capable = true
        mig = [
            { profile = "3g.20gb", start = 4, uuid = "MIG-00000000-0000-0000-0000-0000000000b1" },
            { profile = "1g.5gb", start = 0, uuid = "MIG-00000000-0000-0000-0000-0000000000b2" },
            { profile = "1g.10gb", start = 2, uuid = "MIG-00000000-0000-0000-0000-0000000000b3" },
        ]
        """)
    slices = [d for d in inventory_of(path).devices if d.parent_uuid]
    assert Counter(s.attributes["mig_profile"] for s in slices) == {"3g.20gb": 1, "1g.5gb": 1, "1g.10gb": 1}


def test_row_remap_failure_marks_the_gpu_unhealthy(inventory_of, write_fixture) -> None:
    path = write_fixture("remap", """
        extends = "l4-2"
        [nvidia.defaults]
        remapped_rows = { corrected = 3, uncorrected = 2, pending = 0, failure = 1 }
        """)
    found = gpus(inventory_of(path))
    assert {g.health for g in found} == {"unhealthy"}
    assert "row remapping failed" in found[0].health_reason
    assert found[0].attributes["remapped_rows"]["uncorrected"] == 2


def test_marked_unhealthy_devices_stay_unhealthy_with_their_slices(fake_state: Path) -> None:
    collector = NvidiaCollector(FakeNvml(load_fixture("hgx-h100-mig")), sysfs_root=None)
    collector.mark_unhealthy(H100_UUIDS[0], "XID 79: GPU has fallen off the bus")
    for _ in range(2):
        devices = {d.uuid: d for d in collector.collect().devices}
        assert devices[H100_UUIDS[0]].health_reason == "XID 79: GPU has fallen off the bus"
        assert devices[SLICE_3G].health == "unhealthy" and H100_UUIDS[0] in devices[SLICE_3G].health_reason
        assert devices[H100_UUIDS[1]].health == "ok"
    collector.clear_unhealthy(H100_UUIDS[0])
    assert {d.health for d in collector.collect().devices} == {"ok"}


@pytest.mark.parametrize("name, model", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-SXM4-40GB", "A100"), ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"), ("NVIDIA A10", "A10"),
    ("NVIDIA A10G", "A10G"), ("Tesla T4", "T4"), ("Tesla V100-SXM2-16GB", "V100"), ("NVIDIA GH200 480GB", "GH200"),
    ("NVIDIA RTX A6000", "A6000"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
])
def test_canonical_model(name: str, model: str) -> None:
    assert canonical_model(name) == model


def test_cuda_version_text() -> None:
    assert [cuda_version_text(v) for v in (12040, 11080, 12020, None)] == ["12.4", "11.8", "12.2", None]
