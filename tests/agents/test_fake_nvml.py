"""The fake NVML behaves like the real ``pynvml`` module where the real one can be checked."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import pynvml
import pytest

from agents.fake import FakeNvml, FixtureError, claim_device, fixture_names, inject_xid, load_fixture

MIB = 1024 * 1024
H100_GPU0 = "GPU-59e7bc1f-2755-5a1a-95c9-aa824ff2e686"
H100_SLICE_1G = "MIG-44dfed45-b5dc-5f14-9820-48c616ad510f"


@pytest.fixture
def nvml(fake_state: Path) -> FakeNvml:
    fake = FakeNvml(load_fixture("hgx-h100-mig"))
    fake.nvmlInit()
    return fake


def test_error_classes_are_the_real_modules() -> None:
    fake = FakeNvml(load_fixture("t4"))
    for name in ("NVMLError", "NVMLError_NotFound", "NVMLError_NotSupported", "NVMLError_GpuIsLost",
                 "NVMLError_Uninitialized", "NVMLError_Timeout", "NVMLError_LibraryNotFound"):
        assert getattr(fake, name) is getattr(pynvml, name)
    with pytest.raises(pynvml.NVMLError_Uninitialized) as raised:
        fake.nvmlDeviceGetCount()
    assert raised.value.value == pynvml.NVML_ERROR_UNINITIALIZED


def test_real_pynvml_fails_the_same_way_before_init() -> None:
    # The real module, on a machine without the NVIDIA library: calls before init raise
    # Uninitialized, and init itself raises LibraryNotFound. The fake's no-driver node matches.
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a real NVIDIA driver")
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        FakeNvml(load_fixture("no-driver")).nvmlInit()


def test_init_is_reference_counted() -> None:
    fake = FakeNvml(load_fixture("t4"))
    fake.nvmlInit()
    fake.nvmlInit()
    fake.nvmlShutdown()
    assert fake.nvmlDeviceGetCount() == 1
    fake.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlShutdown()


def test_return_types_match_the_real_module(nvml: FakeNvml) -> None:
    gpu = nvml.nvmlDeviceGetHandleByIndex(1)
    memory = nvml.nvmlDeviceGetMemoryInfo(gpu)
    assert isinstance(memory, pynvml.c_nvmlMemory_t)
    assert memory.total == 81559 * MIB  # bytes, not MiB
    assert isinstance(nvml.nvmlDeviceGetMemoryInfo(gpu, pynvml.nvmlMemory_v2), pynvml.c_nvmlMemory_v2_t)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(gpu) == 700_000  # milliwatts
    assert nvml.nvmlDeviceGetPciInfo(gpu).busId == "00000000:2A:00.0"
    assert isinstance(nvml.nvmlDeviceGetName(gpu), str)
    assert nvml.nvmlDeviceGetCudaComputeCapability(gpu) == (9, 0)
    assert isinstance(nvml.nvmlDeviceGetUtilizationRates(gpu), pynvml.c_nvmlUtilization_t)

    flag = nvml.nvmlDeviceIsMigDeviceHandle(gpu)
    assert isinstance(flag, ctypes.c_uint) and flag.value == 0
    slice_handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(nvml.nvmlDeviceGetHandleByIndex(0), 1)
    flag = nvml.nvmlDeviceIsMigDeviceHandle(slice_handle)
    assert isinstance(flag, ctypes.c_uint) and flag.value == 1
    assert flag != 1  # c_uint(1) == 1 is False on the real module too


def test_mig_indexes_and_profiles(nvml: FakeNvml) -> None:
    gpu0 = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetMigMode(gpu0) == [1, 1]
    assert nvml.nvmlDeviceGetMaxMigDeviceCount(gpu0) == 7
    with pytest.raises(pynvml.NVMLError_NotFound):  # 4 slices: index 4..6 are empty
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu0, 4)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu0, 7)
    slice_handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu0, 1)
    assert nvml.nvmlDeviceGetUUID(slice_handle) == H100_SLICE_1G
    assert nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(slice_handle) is gpu0
    with pytest.raises(pynvml.NVMLError_NotSupported):  # per-slice power does not exist
        nvml.nvmlDeviceGetPowerUsage(slice_handle)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # utilisation on a MIG-enabled GPU
        nvml.nvmlDeviceGetUtilizationRates(gpu0)

    info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(gpu0, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    assert (info.name, info.id, info.sliceCount, info.memorySizeMB) == ("MIG 1g.10gb", 19, 1, 9984)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetGpuInstanceProfileInfo(gpu0, pynvml.NVML_GPU_INSTANCE_PROFILE_8_SLICE)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetGpuInstanceProfileInfo(gpu0, pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # an L4 has no MIG at all
        l4 = FakeNvml(load_fixture("l4-2"))
        l4.nvmlInit()
        l4.nvmlDeviceGetMigMode(l4.nvmlDeviceGetHandleByIndex(0))


def test_unimplemented_functions_are_missing_and_constants_are_real(nvml: FakeNvml) -> None:
    assert nvml.NVML_TEMPERATURE_GPU == pynvml.NVML_TEMPERATURE_GPU
    assert nvml.c_nvmlMemory_t is pynvml.c_nvmlMemory_t
    with pytest.raises(AttributeError, match="does not implement nvmlDeviceGetBAR1MemoryInfo"):
        nvml.nvmlDeviceGetBAR1MemoryInfo


def test_claimed_processes_only_while_alive(nvml: FakeNvml, fake_state: Path, live_pid: int, dead_pid: int) -> None:
    claim_device(H100_SLICE_1G, live_pid, used_mib=2048)
    claim_device(H100_SLICE_1G, dead_pid)
    slice_handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(nvml.nvmlDeviceGetHandleByIndex(0), 1)
    processes = nvml.nvmlDeviceGetComputeRunningProcesses(slice_handle)
    assert [(p.pid, p.usedGpuMemory) for p in processes] == [(live_pid, 2048 * MIB)]
    assert nvml.nvmlDeviceGetMemoryInfo(slice_handle).free == (9984 - 2048) * MIB
    # The parent GPU sees the slice's process, tagged with its GPU instance.
    parent = nvml.nvmlDeviceGetComputeRunningProcesses(nvml.nvmlDeviceGetHandleByIndex(0))
    assert [(p.pid, p.gpuInstanceId) for p in parent] == [(live_pid, 9)]


def test_xid_injection_is_delivered_once(nvml: FakeNvml, fake_state: Path) -> None:
    events = nvml.nvmlEventSetCreate()
    gpu0 = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceRegisterEvents(gpu0, pynvml.nvmlEventTypeXidCriticalError, events)
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait(events, 0)
    inject_xid(H100_SLICE_1G, 48)
    data = nvml.nvmlEventSetWait(events, 1000)
    assert (data.device, data.eventType, data.eventData, data.gpuInstanceId) == (gpu0, 0x8, 48, 9)
    started = time.monotonic()
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait(events, 50)
    assert time.monotonic() - started >= 0.04  # a wait with nothing to report waits
    # A line still being written is taken once it is complete.
    with (fake_state / "xid").open("a") as xid_file:
        xid_file.write(f"{H100_GPU0} 6")
        xid_file.flush()
        with pytest.raises(pynvml.NVMLError_Timeout):
            nvml.nvmlEventSetWait(events, 20)
        xid_file.write("3\n")
    assert nvml.nvmlEventSetWait(events, 1000).eventData == 63


def test_xid_lines_from_before_the_fake_started_are_stale(fake_state: Path) -> None:
    inject_xid(H100_GPU0, 79)
    nvml = FakeNvml(load_fixture("hgx-h100-mig"))
    nvml.nvmlInit()
    events = nvml.nvmlEventSetCreate()
    nvml.nvmlDeviceRegisterEvents(nvml.nvmlDeviceGetHandleByIndex(0), 0x8, events)
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait(events, 20)


def test_scheduled_xid_comes_after_the_first_wait() -> None:
    nvml = FakeNvml(load_fixture("xid79"))
    nvml.nvmlInit()
    events = nvml.nvmlEventSetCreate()
    for index in range(nvml.nvmlDeviceGetCount()):
        nvml.nvmlDeviceRegisterEvents(nvml.nvmlDeviceGetHandleByIndex(index), 0x8, events)
    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait(events, 0)
    data = nvml.nvmlEventSetWait(events, 0)
    assert nvml.nvmlDeviceGetUUID(data.device) == "GPU-3f1a68e2-dc7c-5f22-a76e-f7c7fbb6ffd2"
    assert data.eventData == 79


def test_fault_scenarios(write_fixture) -> None:
    unsupported = FakeNvml(load_fixture("not-supported"))
    unsupported.nvmlInit()
    gpu = unsupported.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        unsupported.nvmlDeviceGetTemperature(gpu, 0)
    assert unsupported.nvmlDeviceGetMemoryInfo(gpu).total == 81920 * MIB

    lost = FakeNvml(load_fixture("lost-gpu"))
    lost.nvmlInit()
    gpu2 = lost.nvmlDeviceGetHandleByIndex(2)
    assert lost.nvmlDeviceGetUUID(gpu2) == "GPU-c213c5d4-1132-5921-bd83-2415269b8d43"  # cached identity
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        lost.nvmlDeviceGetMemoryInfo(gpu2)

    old_driver = FakeNvml(load_fixture(write_fixture("old", """
        extends = "t4"
        [faults]
        missing_functions = ["nvmlDeviceGetNumaNodeId"]
        """)))
    old_driver.nvmlInit()
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        old_driver.nvmlDeviceGetNumaNodeId(old_driver.nvmlDeviceGetHandleByIndex(0))


@pytest.mark.parametrize("layout, message", [
    ('{ profile = "3g.40gb", start = 2, uuid = "MIG-a" }', "may start at slots"),
    ('{ profile = "1g.10gb", start = 7, uuid = "MIG-a" }', "may start at slots"),
    ('{ profile = "4g.40gb", start = 0, uuid = "MIG-a" }, { profile = "2g.20gb", start = 2, uuid = "MIG-b" }',
     "overlaps"),
    ('{ profile = "5g.50gb", start = 0, uuid = "MIG-a" }', "does not exist"),
    ('{ profile = "1g.10gb", start = 0, uuid = "GPU-a" }', "uuid must be"),
])
def test_impossible_mig_layouts_are_refused(write_fixture, layout: str, message: str) -> None:
    path = write_fixture("bad-mig", f"""
        extends = "t4"
        [[nvidia.gpus]]
        uuid = "GPU-00000000-0000-0000-0000-000000000001"
        name = "NVIDIA H100 80GB HBM3"
        bus_id = "00000000:18:00.0"
        memory_mib = 81559
        mig_capable = true
        mig = [{layout}]
        """)
    with pytest.raises(FixtureError, match=message):
        FakeNvml(load_fixture(path))


def test_every_shipped_fixture_builds() -> None:
    names = fixture_names()
    for required in ("hgx-h100-mig", "a100-4", "l4-2", "t4", "ascend-910b-8", "alveo-u250-2", "intel-fpga",
                     "lost-gpu", "xid79", "not-supported", "no-driver"):
        assert required in names
    for name in names:
        fixture = load_fixture(name)
        assert fixture.node["hostname"] and fixture.node["cpu_cores"] > 0 and fixture.node["memory_mib"] > 0
        FakeNvml(fixture)  # validates the NVIDIA part, MIG layouts included


def test_unknown_fixture_names_the_shipped_ones() -> None:
    with pytest.raises(FixtureError, match="hgx-h100-mig"):
        load_fixture("no-such-node")
