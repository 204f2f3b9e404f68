"""Vendor plugins: Ascend (npu-smi), Xilinx (xbutil), Intel FPGA (fpgainfo), AMD (amdsmi)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from agents.collectors.amd import AmdCollector
from agents.collectors.ascend import AscendCollector, parse_info
from agents.collectors.intel_fpga import IntelFpgaCollector
from agents.collectors.tool import ToolOutputError
from agents.collectors.xilinx import XilinxCollector, model_of_shell
from agents.fake import FakeAmdSmi, claim_device, load_fixture, plugin_kwargs
from tests.agents.conftest import devices_by_uuid


def _ascend(fixture: str | Path) -> AscendCollector:
    return AscendCollector(**plugin_kwargs("ascend", load_fixture(fixture)))


def test_ascend_910b_node(inventory_of) -> None:
    inventory = inventory_of("ascend-910b-8")
    assert inventory.collectors["ascend"] == "ok"
    assert inventory.host.attributes["npu_driver_version"] == "23.0.rc3"
    npus = [d for d in inventory.devices if d.kind == "npu"]
    assert [d.index for d in npus] == list(range(8))
    first = npus[0]
    assert (first.uuid, first.bus_id, first.vendor) == ("NPU-0000:c1:00.0", "0000:c1:00.0", "huawei")
    assert (first.model, first.name, first.attributes["npu_chip"]) == ("910B", "Ascend 910B2C", "910B2C")
    assert (first.memory_total_mib, first.memory_free_mib) == (65536, 65536 - 3161)
    assert (first.power_w, first.temperature_c, first.utilization_pct) == (93.6, 41.0, 0.0)
    assert first.attributes["serial"] == "102341588910" and first.attributes["processes"] == []
    busy = npus[1]
    assert busy.attributes["processes"] == [{"pid": 402311, "name": "python3.9", "used_memory_mib": 41962}]
    assert (busy.utilization_pct, busy.memory_free_mib) == (92.0, 65536 - 45123)
    assert [d.health for d in npus] == ["ok"] * 6 + ["unhealthy", "ok"]  # NPU 5 "Warning" is a minor alarm
    assert npus[6].health_reason == "npu-smi reports health Alarm"


def test_ascend_claims_show_as_processes(fake_state: Path, live_pid: int) -> None:
    claim_device("NPU-0000:82:00.0", live_pid, used_mib=8000)
    npu3 = devices_by_uuid(_collect(_ascend("ascend-910b-8")))["NPU-0000:82:00.0"]
    assert [p["pid"] for p in npu3.attributes["processes"]] == [live_pid]
    assert npu3.memory_free_mib == 65536 - 3161 - 8000


def _collect(collector):
    from agents.inventory import collect

    return collect([collector])


ATLAS_300I_DUO = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                                   Version: 23.0.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 8       310P3                 | OK              | NA           48                0     / 0             |
| 0       0                     | 0000:82:00.0    | 0            1699 / 44280                            |
| 1       1                     | 0000:83:00.0    | 7            21016/ 43693                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| No running processes found in NPU 8                                                                    |
+===============================+=================+======================================================+
"""


def test_ascend_parses_cards_without_hbm_and_with_two_chips() -> None:
    version, chips = parse_info(ATLAS_300I_DUO)
    assert version == "23.0.0"
    assert [(c["npu_id"], c["chip_id"], c["bus_id"], c["chip_name"]) for c in chips] == [
        (8, 0, "0000:82:00.0", "310P3"), (8, 1, "0000:83:00.0", "310P3")]
    assert chips[1]["chip_values"] == {"AICore(%)": "7", "Memory-Usage(MB)": "21016/ 43693"}
    assert chips[0]["npu_values"]["Power(W)"] == "NA"
    with pytest.raises(ToolOutputError):
        parse_info("Command not found: npu-smi\n")


@pytest.mark.parametrize("fault, expected", [
    ("exit", "error: npu-smi exited with status 1: dcmi module initialize failed. ret is -8005"),
    ("garbage", "error: npu-smi output not understood: no NPU rows found in `npu-smi info`"),
    ("hang", "error: npu-smi timed out after 0.5 s"),
])
def test_a_failing_npu_smi_is_an_error_of_its_own(inventory_of, write_fixture, fault: str, expected: str) -> None:
    path = write_fixture("mixed", f"""
        extends = ["ascend-910b-8", "alveo-u250-2", "t4"]
        [faults]
        tools = {{ npu-smi = "{fault}" }}
        tool_timeout_s = 0.5
        """)
    inventory = inventory_of(path)
    assert inventory.collectors["ascend"] == expected
    assert (inventory.collectors["xilinx"], inventory.collectors["nvidia"]) == ("ok", "ok")
    assert sorted(d.kind for d in inventory.devices) == ["fpga", "fpga", "gpu"]


def test_missing_and_misconfigured_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert AscendCollector().collect().status == "absent: npu-smi not found on PATH"
    assert XilinxCollector().collect().status == "absent: xrt-smi or xbutil not found on PATH"
    assert IntelFpgaCollector().collect().status == "absent: fpgainfo not found on PATH"
    status = AscendCollector(str(tmp_path / "opt/npu-smi")).collect().status
    assert status == f"error: configured executable {tmp_path / 'opt/npu-smi'} does not exist"
    # A tool found on PATH is used: here a shell script that prints garbage.
    script = tmp_path / "npu-smi"
    script.write_text("#!/bin/sh\necho 'Segmentation fault'\n")
    script.chmod(0o755)
    assert AscendCollector().collect().status.startswith("error: npu-smi output not understood")


def test_alveo_u250_node(inventory_of) -> None:
    inventory = inventory_of("alveo-u250-2")
    assert inventory.host.attributes["xrt_version"] == "2.16.204"
    fpgas = [d for d in inventory.devices if d.kind == "fpga"]
    assert [(d.uuid, d.model, d.name, d.memory_total_mib) for d in fpgas] == [
        ("FPGA-0000:03:00.1", "U250", "Alveo U250", 65536), ("FPGA-0000:04:00.1", "U250", "Alveo U250", 65536)]
    assert {d.attributes["fpga_shell"] for d in fpgas} == {"xilinx_u250_gen3x16_xdma_shell_4_1"}
    assert {d.health for d in fpgas} == {"ok"} and {d.vendor for d in fpgas} == {"xilinx"}


def test_alveo_not_ready_is_unhealthy(inventory_of, write_fixture) -> None:
    path = write_fixture("no-shell", """
        extends = "alveo-u250-2"
        [xilinx.defaults]
        is_ready = false
        """)
    fpgas = [d for d in inventory_of(path).devices if d.kind == "fpga"]
    assert {d.health for d in fpgas} == {"unhealthy"} and "not ready" in fpgas[0].health_reason


@pytest.mark.parametrize("shell, model", [
    ("xilinx_u250_gen3x16_xdma_shell_4_1", "U250"), ("xilinx_u55c_gen3x16_xdma_base_3", "U55C"),
    ("xilinx_u50_gen3x16_xdma_5_202210_1", "U50"), ("xilinx_vck5000_gen4x8_qdma_2_202220_1", "VCK5000"),
    ("custom_shell", None),
])
def test_alveo_model_from_shell(shell: str, model: str | None) -> None:
    assert model_of_shell(shell) == model


def test_intel_pac(inventory_of) -> None:
    (fpga,) = inventory_of("intel-fpga").devices
    assert (fpga.uuid, fpga.vendor, fpga.model, fpga.bus_id) == ("FPGA-0000:3b:00.0", "intel", "PAC D5005",
                                                                 "0000:3b:00.0")
    assert fpga.attributes["fpga_shell"] == "9346116d-a52d-5ca8-b06a-a9a389ef7c8d"
    assert fpga.attributes["bitstream_id"] == "0x2300011001030F"


def test_amd_mi300x_through_fake_amdsmi(inventory_of) -> None:
    inventory = inventory_of("mi300x-8")
    assert inventory.collectors["amd"] == "ok"
    gpus = [d for d in inventory.devices if d.vendor == "amd"]
    assert len(gpus) == 8 and {g.model for g in gpus} == {"MI300X"}
    assert (gpus[0].memory_total_mib, gpus[0].memory_free_mib) == (196592, 196592 - 283)
    assert (gpus[0].architecture, gpus[0].power_w, gpus[0].bus_id) == ("gfx942", 138.0, "0000:11:00.0")
    assert [g.numa_node for g in gpus] == [0] * 4 + [1] * 4


def test_amd_without_rocm_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # amdsmi raises KeyError at import when ROCm's library path is missing.
    (tmp_path / "amdsmi.py").write_text(textwrap.dedent("""
        import os
        os.environ["ROCM_PATH_THAT_IS_NOT_SET"]
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    status = AmdCollector().collect().status
    assert status.startswith("absent: amdsmi not importable (KeyError")


def test_amd_library_failure_is_an_error() -> None:
    fake = FakeAmdSmi(load_fixture("mi300x-8"))

    def refuse(flag: int = 0) -> None:
        raise fake.AmdSmiLibraryException(8)

    fake.amdsmi_init = refuse
    assert AmdCollector(fake).collect().status.startswith("error: amdsmi cannot list GPUs")
