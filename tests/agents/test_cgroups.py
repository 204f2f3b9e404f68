"""Job cgroups as the kernel enforces them: limits, device rules (v1 devices controller and
the v2 BPF program), one kill for a whole cgroup, and how the hierarchies are found.

Cases that need root and a writable hierarchy skip, saying why, where there is none.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from agents import bpf_devices, cgroups
from agents.bpf_devices import DeviceRule
from agents.cgroups import CgroupV2, JobCgroup
from tests.agents.cgroup_support import driver_or_skip

PROBE = textwrap.dedent("""
    import errno, sys
    for path in sys.argv[1:]:
        try:
            open(path, "rb").close()
            print(path, "ok")
        except OSError as exc:
            print(path, errno.errorcode[exc.errno])
""")


def run_in(procs_files: list[str], *argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` inside a cgroup (joined between fork and exec, as the shim does)."""
    def join() -> None:
        for path in procs_files:
            Path(path).write_text(str(os.getpid()))
    return subprocess.run(list(argv), preexec_fn=join, capture_output=True, text=True, timeout=30)


def opened(result: subprocess.CompletedProcess) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


@pytest.fixture
def devices(tmp_path: Path) -> tuple[str, str]:
    """Two character devices no driver serves (as a test machine's GPUs): 195:0 and 195:1."""
    paths = []
    for minor in (0, 1):
        path = tmp_path / f"nvidia{minor}"
        try:
            os.mknod(path, 0o666 | 0o020000, os.makedev(195, minor))
        except PermissionError:
            pytest.skip("making device files needs root (CAP_MKNOD)")
        paths.append(str(path))
    return paths[0], paths[1]


def test_mounts_are_read_per_controller_and_per_version() -> None:
    mounts = textwrap.dedent("""\
        tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
        cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
        cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
        cgroup /sys/fs/cgroup/devices cgroup rw,devices 0 0
        cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
        cgroup2 /mnt/with\\040space cgroup2 rw 0 0
    """)
    v2, v1 = cgroups.cgroup_mounts(mounts)
    assert v2 == [Path("/sys/fs/cgroup/unified"), Path("/mnt/with space")]
    assert v1 == {"cpu": Path("/sys/fs/cgroup/cpu,cpuacct"), "memory": Path("/sys/fs/cgroup/memory"),
                  "devices": Path("/sys/fs/cgroup/devices")}


@pytest.mark.parametrize(("cores", "quota"), [(0, None), (1, 100_000), (1.5, 150_000), (0.001, 1_000), (64, 6_400_000)])
def test_cpu_quota_per_100ms_period(cores: float, quota: int | None) -> None:
    # 1.5 cores: 1.5 * 100,000 µs of CPU time per 100,000 µs; the kernel's floor is 1,000 µs.
    assert cgroups.cpu_quota_us(cores) == quota


def test_device_rules_come_from_the_files_themselves(devices: tuple[str, str], tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a device")
    (tmp_path / "link").symlink_to(devices[1])
    rules = cgroups.device_rules([devices[0], str(tmp_path / "link"), str(tmp_path / "plain"), str(tmp_path / "missing"),
                                  str(tmp_path / "nvidia*")])
    assert [str(rule) for rule in rules] == ["c 195:0", "c 195:1"]


def test_v2_limits_are_written_as_the_kernel_reads_them(tmp_path: Path) -> None:
    """Values only: this machine's v2 hierarchy may offer no cpu and memory controllers, so the
    files are a plain directory tree here (the kernel's behaviour is the v1 cases' below)."""
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory")
    (tmp_path / "poold").mkdir()
    (tmp_path / "poold" / "cgroup.subtree_control").write_text("cpu memory")
    driver = CgroupV2(tmp_path, "poold")
    job = driver.create(7, 1.5, 512, None)
    assert job.dirs == [tmp_path / "poold" / "job-7"]
    assert (job.dirs[0] / "cpu.max").read_text() == "150000 100000"
    assert (job.dirs[0] / "memory.max").read_text() == str(512 * 2**20)
    unlimited = driver.create(8, 0, 0, None)
    assert (unlimited.dirs[0] / "cpu.max").read_text() == "max 100000"
    assert not (unlimited.dirs[0] / "memory.max").exists()


def test_memory_cpu_and_devices_are_enforced(cgroup_parent: str, devices: tuple[str, str]) -> None:
    driver = driver_or_skip(cgroup_parent)
    job = driver.create(1, 0.5, 64, cgroups.device_rules([devices[0]]) if driver.devices else None)
    mine, other = devices
    result = run_in(job.procs_files, sys.executable, "-c", PROBE, mine, other, "/dev/null")
    if driver.devices:
        # Its own device is allowed (no driver answers 195:0 here: ENXIO); the other one is not.
        assert opened(result) == {mine: "ENXIO", other: "EPERM", "/dev/null": "ok"}
    hog = run_in(job.procs_files, sys.executable, "-c", "x = bytearray(256 * 2**20); print('survived')")
    assert hog.returncode == -9 and "survived" not in hog.stdout
    assert job.oom_kills() >= 1
    assert job.remove()


def test_kill_empties_a_cgroup_whose_processes_fork(cgroup_parent: str) -> None:
    driver = driver_or_skip(cgroup_parent)
    job = driver.create(2, 0, 0, None)
    spawner = "import subprocess, sys, time\nwhile True:\n    subprocess.Popen(['sleep', '60']); time.sleep(0.05)"
    process = subprocess.Popen([sys.executable, "-c", spawner],
                               preexec_fn=lambda: [Path(p).write_text(str(os.getpid())) for p in job.procs_files])
    try:
        deadline = time.monotonic() + 10
        while len(job.pids()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(job.pids()) >= 4
        killed = job.kill()
        assert any(entry.endswith("(sleep)") for entry in killed)
        assert job.processes() == {}
        assert job.remove() and not any(d.exists() for d in job.dirs)
    finally:
        process.kill()
        process.wait()


def v2_cgroup_or_skip() -> Path:
    """A cgroup v2 directory of this test's own (no controllers needed: device programs and
    cgroup.kill work in any v2 cgroup), or skip."""
    if os.geteuid() != 0:
        pytest.skip("making cgroups needs root")
    v2, _ = cgroups.cgroup_mounts(cgroups.MOUNTS.read_text())
    if not v2:
        pytest.skip("no cgroup v2 hierarchy is mounted")
    why = bpf_devices.probe()
    if why is not None:
        pytest.skip(f"this kernel does not load BPF device programs for us: {why}")
    path = v2[0] / f"poold-test-{uuid.uuid4().hex[:10]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"the cgroup v2 hierarchy at {v2[0]} is not writable: {exc.strerror}")
    return path


def test_v2_device_program_allows_exactly_its_rules(devices: tuple[str, str]) -> None:
    path = v2_cgroup_or_skip()
    job = JobCgroup([path])
    try:
        mine, other = devices
        bpf_devices.attach(path, [*cgroups.STANDARD_DEVICES, *cgroups.device_rules([mine])])
        result = run_in(job.procs_files, sys.executable, "-c", PROBE, mine, other, "/dev/null", "/dev/zero")
        assert opened(result) == {mine: "ENXIO", other: "EPERM", "/dev/null": "ok", "/dev/zero": "ok"}
        # Wildcards: any char device of major 195 (both), and nothing else but the rule's.
        assert job.remove()
        path.mkdir()
        bpf_devices.attach(path, [DeviceRule("c", 195, None)])
        result = run_in(job.procs_files, sys.executable, "-c", PROBE, mine, other)
        assert opened(result) == {mine: "ENXIO", other: "ENXIO"}
        assert run_in(job.procs_files, "cat", "/dev/null").returncode == 1  # not even /dev/null: not in the rules
    finally:
        job.kill()
        job.remove()


def test_v2_kill_uses_cgroup_kill() -> None:
    path = v2_cgroup_or_skip()
    job = JobCgroup([path])
    try:
        process = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: (path / "cgroup.procs").write_text(str(os.getpid())))
        assert job.pids() == {process.pid}
        assert job.kill() == [f"{process.pid} (sleep)"]
        assert process.wait(timeout=5) == -9
    finally:
        job.kill()
        assert job.remove()


def test_a_failed_attach_says_why(tmp_path: Path) -> None:
    if bpf_devices.probe() is not None:
        pytest.skip("this process may not load BPF device programs at all")
    with pytest.raises(bpf_devices.BpfError) as raised:
        bpf_devices.attach(tmp_path, [])  # a plain directory is no cgroup
    assert raised.value.errno == errno.EBADF and "cannot attach a device program" in str(raised.value)
