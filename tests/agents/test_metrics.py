"""The agent's ``/metrics``: dcgm-exporter's names and labels for GPUs, poold's for NPUs and
FPGAs, the job holding each device, the last XID; served over HTTP while the loop runs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.config import AgentSettings
from agents.inventory import Inventory
from agents.metrics import DeviceCollector, NodeView, parse_listen, serve_metrics
from poold_wire.records import DeviceRecord, HostRecord
from tests.agents.agent_harness import Harness, job
from tests.agents.fake_daemon import FakeDaemon

HOST = HostRecord(hostname="hgx-01", cpu_cores=8, memory_total_mib=65536)
GPU = DeviceRecord(uuid="GPU-1", vendor="nvidia", kind="gpu", model="H100", name="NVIDIA H100 80GB HBM3", index=3,
                   memory_total_mib=81559, memory_free_mib=61559, power_w=350.5, temperature_c=61, utilization_pct=87)
SLICE = DeviceRecord(uuid="MIG-1", vendor="nvidia", kind="gpu", model="H100", name="NVIDIA H100 80GB HBM3 MIG 1g.10gb",
                     parent_uuid="GPU-2", memory_total_mib=9984, memory_free_mib=9000, attributes={"mig_profile": "1g.10gb"})
PARENT = DeviceRecord(uuid="GPU-2", vendor="nvidia", kind="gpu", model="H100", index=4, memory_total_mib=81559,
                      health="unhealthy", health_reason="XID 79: fell off the bus")
NPU = DeviceRecord(uuid="NPU-0", vendor="huawei", kind="npu", model="910B", name="Ascend 910B2C", index=0,
                   memory_total_mib=65536, memory_free_mib=16384, power_w=93.6, temperature_c=41, utilization_pct=92)
FPGA = DeviceRecord(uuid="FPGA-0", vendor="xilinx", kind="fpga", model="U250", name="Alveo U250", index=1, memory_total_mib=65536)


def samples_of(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def one(found: dict, name: str, uuid: str) -> tuple[dict[str, str], float]:
    [hit] = [(labels, value) for labels, value in found.get(name, []) if labels["UUID"] == uuid]
    return hit


@pytest.fixture
def found() -> dict:
    view = NodeView(Inventory(host=HOST, devices=[GPU, PARENT, SLICE, NPU, FPGA]), xids={"GPU-2": 79},
                    holders={"GPU-1": 12, "MIG-1": 13}, running_jobs=2)
    registry = CollectorRegistry()
    registry.register(DeviceCollector(lambda: view))
    return samples_of(generate_latest(registry).decode())


def test_a_gpu_reports_as_dcgm_exporter_with_its_job(found):
    labels, util = one(found, "DCGM_FI_DEV_GPU_UTIL", "GPU-1")
    assert util == 87
    assert labels == {"gpu": "3", "UUID": "GPU-1", "device": "nvidia3", "Hostname": "hgx-01", "model_name": "NVIDIA H100 80GB HBM3",
                      "GPU_I_PROFILE": "", "kind": "gpu", "model": "H100", "poold_job": "12"}
    assert one(found, "DCGM_FI_DEV_FB_USED", "GPU-1")[1] == 20000  # 81559 - 61559 MiB
    assert one(found, "DCGM_FI_DEV_FB_FREE", "GPU-1")[1] == 61559
    assert one(found, "DCGM_FI_DEV_POWER_USAGE", "GPU-1")[1] == 350.5
    assert one(found, "DCGM_FI_DEV_GPU_TEMP", "GPU-1")[1] == 61
    assert one(found, "DCGM_FI_DEV_XID_ERRORS", "GPU-1")[1] == 0
    assert one(found, "poold_device_healthy", "GPU-1")[1] == 1


def test_a_mig_slice_has_its_gpu_index_profile_and_job(found):
    labels, free = one(found, "DCGM_FI_DEV_FB_FREE", "MIG-1")
    assert free == 9000 and (labels["gpu"], labels["GPU_I_PROFILE"], labels["poold_job"]) == ("4", "1g.10gb", "13")
    assert not [hit for hit in found["DCGM_FI_DEV_XID_ERRORS"] if hit[0]["UUID"] == "MIG-1"]  # XIDs are the GPU's
    assert one(found, "DCGM_FI_DEV_XID_ERRORS", "GPU-2")[1] == 79
    assert one(found, "poold_device_healthy", "GPU-2")[1] == 0


def test_npus_and_fpgas_report_under_poold_names_and_leave_out_what_they_cannot_tell(found):
    labels, ratio = one(found, "poold_device_utilization_ratio", "NPU-0")
    assert ratio == pytest.approx(0.92) and (labels["kind"], labels["device"], labels["poold_job"]) == ("npu", "npu0", "")
    assert one(found, "poold_device_memory_used_bytes", "NPU-0")[1] == (65536 - 16384) * 2**20
    assert one(found, "poold_device_power_watts", "NPU-0")[1] == 93.6
    assert one(found, "poold_device_temperature_celsius", "NPU-0")[1] == 41
    assert not any(labels["UUID"] == "NPU-0" for name, hits in found.items() if name.startswith("DCGM_") for labels, _ in hits)
    # The FPGA reports no utilisation, memory use, power or temperature: no series, not zeros.
    fpga = {name for name, hits in found.items() for labels, _ in hits if labels.get("UUID") == "FPGA-0"}
    assert fpga == {"poold_device_healthy"}
    assert found["poold_agent_running_jobs"] == [({}, 2)]


@pytest.mark.parametrize("listen", ["0.0.0.0:9471", "127.0.0.1:0", "[::]:9471", "node-1.example:9471"])
def test_metrics_listen_takes_host_and_port(listen):
    assert AgentSettings(metrics_listen=listen).metrics_listen == listen


@pytest.mark.parametrize("listen", ["9471", ":9471", "0.0.0.0:http", "0.0.0.0:70000", "[::zz]:9471"])
def test_a_bad_metrics_listen_is_refused_naming_the_key(listen):
    with pytest.raises(ValueError, match="metrics_listen"):
        AgentSettings(metrics_listen=listen)


def test_parse_listen():
    assert parse_listen("[::1]:9471") == ("::1", 9471)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)


def test_the_running_agent_serves_its_devices_with_the_job_holding_each(tmp_path: Path, daemon: FakeDaemon) -> None:
    h = Harness(tmp_path / "agent", daemon)
    h.settings = h.settings.model_copy(update={"metrics_listen": "127.0.0.1:0"})
    daemon.assign(job(7, "sleep 30"))
    try:
        agent = h.start()
        daemon.wait_for(lambda: daemon.event_kinds(7) == [("started", None, None)], what="job 7 started")
        daemon.wait_for(lambda: agent.metrics is not None, what="the metrics server")
        h.xid_callback("GPU-aaaa", 48, "XID 48: double bit ECC error")
        daemon.wait_for(lambda: "GPU-aaaa" in agent.xids, what="the XID taken")
        response = httpx.get(f"http://127.0.0.1:{agent.metrics.port}/metrics", timeout=5)
        assert response.status_code == 200
        found = samples_of(response.text)
        labels, xid = one(found, "DCGM_FI_DEV_XID_ERRORS", "GPU-aaaa")
        assert xid == 48 and labels["poold_job"] == "7" and labels["Hostname"] == "node-1"
        assert one(found, "poold_device_healthy", "GPU-aaaa")[1] == 0  # as the daemon is told
        assert found["poold_agent_running_jobs"] == [({}, 1)]
    finally:
        h.stop()
    with pytest.raises(httpx.HTTPError):  # stopped with the loop
        httpx.get(f"http://127.0.0.1:{agent.metrics.port}/metrics", timeout=1)


def test_an_address_taken_already_leaves_the_agent_without_metrics(caplog):
    taken = serve_metrics("127.0.0.1:0", lambda: NodeView(None, {}, {}, 0))
    try:
        assert serve_metrics(f"127.0.0.1:{taken.port}", lambda: NodeView(None, {}, {}, 0)) is None
        assert f"metrics_listen 127.0.0.1:{taken.port}: cannot listen" in caplog.text
        assert serve_metrics(None, lambda: NodeView(None, {}, {}, 0)) is None
    finally:
        taken.stop()
