"""Jobs as the runner confines them: the default user, a cgroup with the job's limits, its
own device files only, a kill of the whole cgroup, and an OOM kill said as such.

Cgroup cases skip, saying why, where this machine cannot give jobs cgroups; the level they
got is in each job's ``started`` event.
"""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

import pytest

from agents import cgroups
from agents.cgroups import CgroupV1
from agents.isolation import Isolations
from agents.runner import Runner
from agents.users import UserPolicy
from poold_wire.records import DeviceRecord
from tests.agents.cgroup_support import driver_or_skip
from tests.agents.test_cgroups import PROBE
from tests.agents.test_runner import GPU_A, GPU_B, job, output, py, wait_ended, wait_file

ROOT_JOBS = UserPolicy(default_user="root", allow_root=True)


def make(tmp_path: Path, isolation: Isolations, users: UserPolicy = ROOT_JOBS) -> Runner:
    return Runner(tmp_path / "state", "node-1", kill_grace_s=0.5, base_env={"PATH": os.environ["PATH"]},
                  users=users, isolation=isolation)


def started(runner: Runner, job_id: int):
    return next(e for _, e in runner.outbox.pending() if e.job_id == job_id and e.kind == "started")


def gpu_record(uuid: str, files: list[str] | None) -> DeviceRecord:
    return DeviceRecord(uuid=uuid, vendor="nvidia", kind="gpu", model="H100", attributes={"device_files": files})


def test_a_job_without_user_runs_as_the_default_user_in_a_cgroup_with_its_limits(tmp_path: Path, cgroup_parent: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    driver = driver_or_skip(cgroup_parent)
    runner = make(tmp_path, Isolations(driver, "test"), users=UserPolicy())
    runner.start(job(1, ["sh", "-c", "id -u; cat /proc/self/cgroup; sleep 30"], cpu_cores=1.5, host_memory_mib=256))
    state = runner.jobs[1]
    assert state.isolation == started(runner, 1).isolation == driver.level
    dirs = [Path(d) for d in state.cgroup]
    assert [d.name for d in dirs] == ["job-1"] * len(dirs) and all(d.parent.name == cgroup_parent for d in dirs)
    limits = {f.name: f.read_text().strip() for d in dirs for f in d.iterdir()
              if f.name in ("memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us", "cpu.max")}
    # 1.5 cores: 150,000 µs of CPU time per 100,000 µs period; 256 MiB = 268,435,456 bytes.
    assert limits in ({"memory.limit_in_bytes": "268435456", "cpu.cfs_quota_us": "150000"},
                      {"memory.max": "268435456", "cpu.max": "150000 100000"})
    lines = wait_file(runner.store.log_path(1)).splitlines()
    assert lines[0] == str(pwd.getpwnam("nobody").pw_uid)
    assert any(line.endswith(f"/{cgroup_parent}/job-1") for line in lines[1:])
    pids = {pid for d in dirs for pid in map(int, (d / "cgroup.procs").read_text().split())}
    assert pids  # the job's processes, all in its cgroup

    runner.cancel(1)
    assert wait_ended(runner, 1).outcome == "cancelled"
    assert not any(d.exists() for d in dirs)  # emptied and removed
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_job_over_its_host_memory_fails_saying_so(tmp_path: Path, cgroup_parent: str) -> None:
    runner = make(tmp_path, Isolations(driver_or_skip(cgroup_parent), "test"))
    runner.start(job(1, py("x = bytearray(512 * 2**20); print('survived')"), host_memory_mib=64))
    state = wait_ended(runner, 1)
    assert (state.outcome, state.exit_code) == ("failed", 137)
    assert state.message == "exceeded its host_memory of 64 MiB: the kernel's OOM killer stopped 1 of its processes; killed by SIGKILL"
    assert "survived" not in output(runner, 1)


@pytest.fixture
def fake_gpus(tmp_path: Path) -> dict[str, DeviceRecord]:
    """Two fake GPUs with a device file each, 195:0 and 195:1 (no driver serves them here)."""
    records = {}
    for minor, device in enumerate((GPU_A, GPU_B)):
        path = tmp_path / f"nvidia{minor}"
        try:
            os.mknod(path, 0o666 | 0o020000, os.makedev(195, minor))
        except PermissionError:
            pytest.skip("making device files needs root (CAP_MKNOD)")
        records[device.uuid] = gpu_record(device.uuid, [str(path)])
    return records


def test_a_job_opens_only_its_own_devices(tmp_path: Path, cgroup_parent: str, fake_gpus: dict[str, DeviceRecord]) -> None:
    driver = driver_or_skip(cgroup_parent)
    if not driver.devices:
        pytest.skip(f"this machine gives jobs cgroups without device control: {driver.devices_why_not}")
    runner = make(tmp_path, Isolations(driver, "test"))
    mine, other = (fake_gpus[d.uuid].attributes["device_files"][0] for d in (GPU_A, GPU_B))
    runner.start(job(1, [sys.executable, "-c", PROBE, mine, other, "/dev/null", "/dev/urandom"], devices=[GPU_A]), fake_gpus)
    assert wait_ended(runner, 1).outcome == "succeeded"
    assert started(runner, 1).isolation == "cgroup+devices"
    seen = dict(line.split(" ", 1) for line in output(runner, 1).splitlines())
    # Its own GPU's file opens as far as the missing driver (ENXIO); the other GPU's is refused.
    assert seen == {mine: "ENXIO", other: "EPERM", "/dev/null": "ok", "/dev/urandom": "ok"}


def test_a_device_whose_files_are_unknown_gets_no_device_control(tmp_path: Path, cgroup_parent: str,
                                                                 fake_gpus: dict[str, DeviceRecord]) -> None:
    driver = driver_or_skip(cgroup_parent)
    if not driver.devices:
        pytest.skip(f"this machine gives jobs cgroups without device control: {driver.devices_why_not}")
    runner = make(tmp_path, Isolations(driver, "test"))
    records = {**fake_gpus, GPU_B.uuid: gpu_record(GPU_B.uuid, None)}
    runner.start(job(1, ["true"], devices=[GPU_A, GPU_B]), records)
    wait_ended(runner, 1)
    event = started(runner, 1)
    assert (event.isolation, event.message) == (
        "cgroup", "no device control: the device files of GPU-bbbb are not known on this node")


def test_shared_device_files_are_open_to_every_job(tmp_path: Path, cgroup_parent: str, fake_gpus: dict[str, DeviceRecord]) -> None:
    driver = driver_or_skip(cgroup_parent)
    if not driver.devices:
        pytest.skip(f"this machine gives jobs cgroups without device control: {driver.devices_why_not}")
    runner = make(tmp_path, Isolations(driver, "test", shared_device_files=[str(tmp_path / "nvidia*")]))
    files = [fake_gpus[d.uuid].attributes["device_files"][0] for d in (GPU_A, GPU_B)]
    runner.start(job(1, [sys.executable, "-c", PROBE, *files]), fake_gpus)  # a CPU-only job
    wait_ended(runner, 1)
    assert output(runner, 1).splitlines() == [f"{path} ENXIO" for path in files]


def test_without_cgroups_a_job_is_held_by_its_environment(tmp_path: Path) -> None:
    runner = make(tmp_path, Isolations(None, "env: the agent is not running as root"))
    runner.start(job(1, ["true"], host_memory_mib=64))
    assert wait_ended(runner, 1).outcome == "succeeded"
    assert (started(runner, 1).isolation, runner.jobs[1].cgroup) == ("env", [])


def test_the_agents_settings_pick_the_level(cgroup_parent: str) -> None:
    from agents.config import AgentSettings

    assert Isolations.from_settings(AgentSettings(isolation="env", cgroup_parent=cgroup_parent)).level == "env"
    driver, why = cgroups.detect(cgroup_parent)
    chosen = Isolations.from_settings(AgentSettings(cgroup_parent=cgroup_parent))
    assert chosen.level == (driver.level if driver else "env")
    assert chosen.why == (why if driver else f"env: {why}")


def test_a_cgroup_that_cannot_be_made_leaves_the_job_at_env(tmp_path: Path) -> None:
    """A plain directory tree stands in for the hierarchy: where the job's cgroup should go
    there is a file, so the cgroup cannot be made; the job runs all the same, and says so."""
    mounts = {"memory": tmp_path / "memory", "cpu": tmp_path / "cpu"}
    for mount in mounts.values():
        mount.mkdir()
    driver = CgroupV1(mounts, "poold")
    (tmp_path / "cpu" / "poold" / "job-1").write_text("in the way")
    runner = make(tmp_path, Isolations(driver, "test"))
    runner.start(job(1, ["true"], host_memory_mib=64))
    assert wait_ended(runner, 1).outcome == "succeeded"
    event = started(runner, 1)
    assert event.isolation == "env" and event.message.startswith("no cgroup: ")
    assert str(tmp_path / "cpu" / "poold" / "job-1") in event.message


def test_a_command_that_cannot_join_its_cgroup_does_not_run(tmp_path: Path) -> None:
    """Between fork and exec the command joins its cgroup; if it cannot, it never runs, and
    the reason is the launch error (what the job's log and event say)."""
    from agents.shim import LaunchError, launch

    spec = {"command": ["sh", "-c", f"touch {tmp_path / 'ran'}"], "env": {"PATH": os.environ["PATH"]},
            "workdir": str(tmp_path), "cgroup_procs": [str(tmp_path / "gone" / "cgroup.procs")], "run_as": None}
    with open(tmp_path / "output.log", "ab") as log, pytest.raises(LaunchError) as failed:
        launch(spec, tmp_path, log)
    assert str(failed.value) == f"cannot join the job's cgroup ({tmp_path / 'gone' / 'cgroup.procs'}): No such file or directory"
    assert not (tmp_path / "ran").exists()
