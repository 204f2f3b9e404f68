"""Which device files each collector names for its devices, over the fake harness's own
device files (real character devices, so cgroup device rules act on them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agents.cgroups import device_rules
from agents.fake import load_fixture, make_device_files
from agents.inventory import close_collectors, collect, load_collectors


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making device files needs root (CAP_MKNOD)")
    return tmp_path / "node"


def files_of(fixture: str, root: Path) -> dict[str, list[str]]:
    collectors = load_collectors(fake=fixture, fake_root=root)
    try:
        inventory = collect(collectors)
    finally:
        close_collectors(collectors)
    return {d.uuid: [str(Path(f).relative_to(root)) for f in d.attributes["device_files"]] for d in inventory.devices}


def test_nvidia_gpus_and_mig_slices(fake_state: Path, root: Path) -> None:
    files = files_of("hgx-h100-mig", root)
    shared = ["dev/nvidiactl", "dev/nvidia-uvm", "dev/nvidia-uvm-tools"]
    assert files["GPU-59e7bc1f-2755-5a1a-95c9-aa824ff2e686"] == ["dev/nvidia0", *shared]
    # A slice: its GPU's files and the capabilities of its GPU instance (gi 9) and compute instance.
    lines = (root / "proc/driver/nvidia-caps/mig-minors").read_text().splitlines()
    minors = dict(line.split() for line in lines)
    assert files["MIG-44dfed45-b5dc-5f14-9820-48c616ad510f"] == [
        "dev/nvidia0", *shared, f"dev/nvidia-caps/nvidia-cap{minors['gpu0/gi9/access']}",
        f"dev/nvidia-caps/nvidia-cap{minors['gpu0/gi9/ci0/access']}"]
    assert sorted(names[0] for uuid, names in files.items() if uuid.startswith("GPU-")) == [f"dev/nvidia{i}" for i in range(8)]
    assert [str(rule) for rule in device_rules([str(root / "dev/nvidia0")])] == ["c 195:0"]


@pytest.mark.parametrize(
    ("fixture", "uuid", "expected"),
    [
        ("ascend-910b-8", "NPU-0000:c2:00.0", ["dev/davinci1", "dev/davinci_manager", "dev/devmm_svm", "dev/hisi_hdc"]),
        ("mi300x-8", "31511517-d1b6-5115-b610-d0d922a2b01f", ["dev/dri/by-path/pci-0000:2f:00.0-render", "dev/kfd"]),
        ("alveo-u250-2", "FPGA-0000:04:00.1", ["dev/dri/by-path/pci-0000:04:00.1-render"]),
        ("intel-fpga", "FPGA-0000:3b:00.0", ["dev/dfl-port.0"]),
    ],
)
def test_other_vendors(fake_state: Path, root: Path, fixture: str, uuid: str, expected: list[str]) -> None:
    files = files_of(fixture, root)
    assert files[uuid] == expected
    for name in expected:
        assert stat.S_ISCHR(os.stat(root / name).st_mode)
    # What is the operator's is there, and named by no device: the management functions.
    management = {"alveo-u250-2": "dev/xclmgmt1", "intel-fpga": "dev/dfl-fme.0"}.get(fixture)
    if management:
        assert (root / management).exists()
        assert all(management not in names for names in files.values())


def test_without_a_root_no_files_are_named(fake_state: Path) -> None:
    collectors = load_collectors(fake="l4-2")
    try:
        assert {tuple(d.attributes["device_files"]) for d in collect(collectors).devices} == {()}
    finally:
        close_collectors(collectors)


def test_making_them_needs_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may make device files")
    assert make_device_files(load_fixture("l4-2"), tmp_path / "node") is None
