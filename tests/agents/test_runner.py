"""The runner: jobs under shims see only their devices, end with the right outcome, once,
and survive (or are reported after) an agent restart."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from agents.inventory import Inventory
from agents.runner import Runner
from agents.users import UserPolicy
from poold_wire.messages import AssignedDevice, Assignment
from poold_wire.records import DeviceRecord, HostRecord

PY = sys.executable

GPU_A = AssignedDevice(uuid="GPU-aaaa", kind="gpu", vendor="nvidia", model="H100", index=0)
GPU_B = AssignedDevice(uuid="GPU-bbbb", kind="gpu", vendor="nvidia", model="H100", index=1)
MIG = AssignedDevice(uuid="MIG-1111-2222", kind="gpu", vendor="nvidia", model="H100", index=0, parent_uuid="GPU-aaaa")
NPU_3 = AssignedDevice(uuid="npu-3", kind="npu", vendor="huawei", model="910B", index=3)
NPU_1 = AssignedDevice(uuid="npu-1", kind="npu", vendor="huawei", model="910B", index=1)
FPGA = AssignedDevice(uuid="fpga-u250-0", kind="fpga", vendor="xilinx", model="U250", bus_id="0000:03:00.1")


def job(job_id: int = 1, command: list[str] | None = None, **kwargs) -> Assignment:
    return Assignment(job_id=job_id, name=f"job-{job_id}", command=command or ["true"], **kwargs)


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


@pytest.fixture
def make_runner(tmp_path: Path):
    def make(**kwargs) -> Runner:
        kwargs.setdefault("kill_grace_s", 0.5)
        kwargs.setdefault("base_env", {"PATH": os.environ["PATH"]})
        # Jobs run as the test itself (root or not): they write into its temporary directory.
        kwargs.setdefault("users", UserPolicy(default_user="root", allow_root=True))
        return Runner(tmp_path / "state", "node-1", **kwargs)

    return make


def wait_ended(runner: Runner, job_id: int, timeout_s: float = 10.0, inventory=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runner.poll(inventory)
        if runner.jobs[job_id].outcome is not None:
            return runner.jobs[job_id]
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not end within {timeout_s} s")


def events(runner: Runner) -> list[tuple]:
    return [(e.job_id, e.kind, e.outcome, e.exit_code) for _, e in runner.outbox.pending()]


def output(runner: Runner, job_id: int) -> str:
    return runner.store.log_path(job_id).read_text()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_file(path: Path, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


SHOW_ENV = py("""
    import json, os
    keys = ["CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
            "POOLD_FPGA_DEVICES", "POOLD_JOB_ID", "POOLD_JOB_NAME", "POOLD_NODE", "MINE", "NOTIFY_SOCKET"]
    print(json.dumps({key: os.environ.get(key) for key in keys}))
""")


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        # One MIG slice, NPUs given as 3,1 (ascending: 1,3), one FPGA by bus id.
        ([MIG, NPU_3, NPU_1, FPGA], {"CUDA_VISIBLE_DEVICES": "MIG-1111-2222", "ASCEND_RT_VISIBLE_DEVICES": "1,3",
                                    "POOLD_FPGA_DEVICES": "0000:03:00.1"}),
        ([GPU_A, GPU_B], {"CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb", "ASCEND_RT_VISIBLE_DEVICES": None,
                          "POOLD_FPGA_DEVICES": None}),
        # No devices: an empty CUDA_VISIBLE_DEVICES hides every GPU; inherited NPU ids are gone.
        ([], {"CUDA_VISIBLE_DEVICES": "", "ASCEND_RT_VISIBLE_DEVICES": None, "POOLD_FPGA_DEVICES": None}),
    ],
)
def test_a_job_sees_only_its_devices(make_runner, devices, expected) -> None:
    inherited = {"PATH": os.environ["PATH"], "CUDA_VISIBLE_DEVICES": "0,1,2,3", "ASCEND_RT_VISIBLE_DEVICES": "0",
                 "ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "0", "NOTIFY_SOCKET": "/run/systemd/notify"}
    runner = make_runner(base_env=inherited)
    # The job's own env cannot widen what it sees.
    runner.start(job(7, SHOW_ENV, devices=devices, env={"MINE": "yes", "CUDA_VISIBLE_DEVICES": "0,1"}))
    assert wait_ended(runner, 7).outcome == "succeeded"
    seen = json.loads(output(runner, 7))
    assert seen == {**expected, "ROCR_VISIBLE_DEVICES": None, "HIP_VISIBLE_DEVICES": None, "POOLD_JOB_ID": "7",
                    "POOLD_JOB_NAME": "job-7", "POOLD_NODE": "node-1", "MINE": "yes", "NOTIFY_SOCKET": None}


def test_env_workdir_and_output(make_runner, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    runner = make_runner()
    runner.start(job(1, ["sh", "-c", "echo $GREETING; pwd; echo oops >&2"], env={"GREETING": "hello"},
                     workdir=str(workdir)))
    state = wait_ended(runner, 1)
    assert (state.outcome, state.exit_code) == ("succeeded", 0)
    assert output(runner, 1).splitlines() == ["hello", str(workdir), "oops"]
    started = [e for _, e in runner.outbox.pending() if e.kind == "started"]
    assert len(started) == 1 and started[0].pid is not None


@pytest.mark.parametrize(
    ("command", "outcome", "exit_code", "message"),
    [
        (["sh", "-c", "exit 0"], "succeeded", 0, "exit code 0"),
        (["sh", "-c", "exit 3"], "failed", 3, "exit code 3"),
        (["sh", "-c", "kill -9 $$"], "failed", 137, "killed by SIGKILL"),
        (["no-such-command-xyz"], "failed", None, "command not found: no-such-command-xyz"),
    ],
)
def test_exit_status_decides_the_outcome(make_runner, command, outcome, exit_code, message) -> None:
    runner = make_runner()
    runner.start(job(1, command))
    state = wait_ended(runner, 1)
    assert (state.outcome, state.exit_code, state.message) == (outcome, exit_code, message)
    assert events(runner)[-1] == (1, "ended", outcome, exit_code)


def test_unknown_user_fails_clearly(make_runner) -> None:
    runner = make_runner()
    runner.start(job(1, ["true"], user="no-such-user-xyz"))
    state = wait_ended(runner, 1)
    assert state.outcome == "failed"
    assert state.message == "unknown user 'no-such-user-xyz' on this node"
    assert "unknown user" in output(runner, 1)
    assert events(runner) == [(1, "ended", "failed", None)]  # it never started


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_job_runs_as_its_user(make_runner) -> None:
    runner = make_runner()
    runner.start(job(1, ["sh", "-c", "id -u; echo $HOME"], user="nobody", workdir="/"))
    assert wait_ended(runner, 1).outcome == "succeeded"
    nobody = pwd.getpwnam("nobody")
    assert output(runner, 1).splitlines() == [str(nobody.pw_uid), nobody.pw_dir]


TREE = """
    import os, signal, subprocess, sys, time
    ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    # A grandchild that left the job's session and ignores SIGTERM, and a plain child.
    escaped = subprocess.Popen([sys.executable, "-c", ignore_term], start_new_session=True)
    child = subprocess.Popen(["sleep", "60"])
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {escaped.pid} {child.pid}")
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(60)
"""


def test_cancel_kills_the_whole_tree(make_runner, tmp_path: Path) -> None:
    runner = make_runner()
    pids_file = tmp_path / "pids"
    runner.start(job(1, py(TREE) + [str(pids_file)]))
    pids = [int(pid) for pid in wait_file(pids_file).split()]
    time.sleep(0.1)  # let the escaped grandchild install its SIGTERM handler
    assert runner.cancel(1)
    assert runner.jobs[1].intent == "cancelled"
    state = wait_ended(runner, 1)
    assert state.outcome == "cancelled"
    assert [pid for pid in pids if not gone(pid)] == []
    assert events(runner)[-1] == (1, "ended", "cancelled", 128 + signal.SIGTERM)


def test_max_runtime_times_out(make_runner) -> None:
    runner = make_runner()
    runner.start(job(1, ["sleep", "30"], max_runtime_s=0.3))
    state = wait_ended(runner, 1)
    assert state.outcome == "timed_out"
    assert state.message.startswith("ran longer than its max_runtime_s of 0.3")


LEAVE_BEHIND = """
    import subprocess, sys
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)  # outlives the command
    open(sys.argv[1], "w").write(str(leftover.pid))
"""


def test_processes_the_command_leaves_behind_are_stopped_before_it_is_reported(make_runner, tmp_path: Path) -> None:
    runner = make_runner()
    pid_file = tmp_path / "leftover"
    runner.start(job(1, py(LEAVE_BEHIND) + [str(pid_file)]))
    leftover = int(wait_file(pid_file))
    state = wait_ended(runner, 1)
    assert (state.outcome, state.exit_code) == ("succeeded", 0)
    assert gone(leftover)
    assert state.message == f"exit code 0; stopped leftover processes of the job: {leftover} (sleep)"


def test_leftover_processes_on_the_jobs_devices_are_killed(make_runner) -> None:
    runner = make_runner()
    runner.start(job(2, ["sleep", "30"], devices=[GPU_B]))  # shares GPU-bbbb with job 1
    runner.start(job(1, ["sh", "-c", "sleep 0.3"], devices=[GPU_A, GPU_B]))
    # Outside the job's process tree: one that carries job 1's id (started through some
    # service on its behalf), and two that carry nothing.
    tagged_on_b = subprocess.Popen(["sleep", "60"], env={**os.environ, "POOLD_JOB_ID": "1"})
    untagged_on_a = subprocess.Popen(["sleep", "60"])
    untagged_on_b = subprocess.Popen(["sleep", "60"])
    try:
        def inventory() -> Inventory:
            def gpu(uuid: str, pids: list[int]) -> DeviceRecord:
                return DeviceRecord(uuid=uuid, vendor="nvidia", kind="gpu", model="H100",
                                    attributes={"processes": [{"pid": p, "used_memory_mib": 500} for p in pids]})
            return Inventory(host=HostRecord(hostname="node-1", cpu_cores=8, memory_total_mib=1024),
                             devices=[gpu("GPU-aaaa", [untagged_on_a.pid]),
                                      gpu("GPU-bbbb", [tagged_on_b.pid, untagged_on_b.pid])])

        state = wait_ended(runner, 1, inventory=inventory)
        assert state.outcome == "succeeded"
        assert tagged_on_b.wait(timeout=5) == -signal.SIGKILL
        # GPU-aaaa was job 1's alone: anything on it goes.
        assert untagged_on_a.wait(timeout=5) == -signal.SIGKILL
        # GPU-bbbb is still used by job 2: only processes that carry job 1's id may die there.
        assert untagged_on_b.poll() is None
        assert state.message == (f"exit code 0; killed leftover processes on GPU-aaaa: {untagged_on_a.pid} (sleep); "
                                 f"killed leftover processes on GPU-bbbb: {tagged_on_b.pid} (sleep)")
        assert runner.jobs[2].outcome is None
    finally:
        for proc in (tagged_on_b, untagged_on_a, untagged_on_b):
            proc.kill()
            proc.wait()
        runner.cancel(2)
        wait_ended(runner, 2)


def test_restart_mid_job_adopts_and_reports_once(make_runner, tmp_path: Path) -> None:
    go = tmp_path / "go"
    runner = make_runner()
    runner.start(job(1, ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.02; done; exit 3"]))
    shim_pid = runner.jobs[1].shim_pid
    del runner  # the agent is killed: its jobs are not

    again = make_runner()
    assert again.running_ids() == [1]
    again.poll()
    assert again.jobs[1].outcome is None and not gone(shim_pid)
    go.touch()
    state = wait_ended(again, 1)
    assert (state.outcome, state.exit_code) == ("failed", 3)
    for _ in range(3):
        again.poll()
    assert events(again) == [(1, "started", None, None), (1, "ended", "failed", 3)]


def test_job_that_ended_while_the_agent_was_down_is_reported_once(make_runner) -> None:
    runner = make_runner()
    runner.start(job(1, ["sh", "-c", "sleep 0.2; exit 7"]))
    exit_file = runner.store.dir(1) / "exit.json"
    del runner
    wait_file(exit_file)

    again = make_runner()
    again.poll()
    assert (again.jobs[1].outcome, again.jobs[1].exit_code) == ("failed", 7)
    again.poll()
    third = make_runner()
    third.poll()
    assert events(third) == [(1, "started", None, None), (1, "ended", "failed", 7)]


def test_recorded_intent_wins_over_a_clean_exit(make_runner) -> None:
    # The job shrugs off SIGTERM and exits 0 before the grace ends: it was still cancelled.
    runner = make_runner(kill_grace_s=30)
    runner.start(job(1, py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(0.4)
    """)))
    time.sleep(0.2)
    runner.cancel(1)
    state = wait_ended(runner, 1)
    assert (state.outcome, state.exit_code) == ("cancelled", 0)
    assert not runner.cancel(1)  # already ended: nothing to do, no second outcome
    runner.poll()
    assert [e for e in events(runner) if e[1] == "ended"] == [(1, "ended", "cancelled", 0)]


def test_restart_mid_kill_keeps_the_intent(make_runner) -> None:
    runner = make_runner()
    runner.start(job(1, py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
    """)))
    time.sleep(0.2)
    runner.cancel(1)  # intent recorded, SIGTERM ignored; the agent dies before SIGKILL
    del runner

    again = make_runner()
    state = wait_ended(again, 1)
    assert (state.outcome, state.exit_code) == ("cancelled", 128 + signal.SIGKILL)


def test_a_lost_job_never_gets_a_second_outcome(make_runner) -> None:
    runner = make_runner()
    runner.start(job(1, ["sleep", "30"]))
    state = runner.jobs[1]
    child = json.loads((runner.store.dir(1) / "child.json").read_text())["pid"]
    os.kill(state.shim_pid, signal.SIGKILL)  # the shim dies without writing exit.json
    os.kill(child, signal.SIGKILL)
    assert wait_ended(runner, 1).outcome == "lost"
    # A late exit.json (or anything else) cannot change what was decided and reported.
    (runner.store.dir(1) / "exit.json").write_text(json.dumps({"exit_code": 0, "signal": None, "error": None,
                                                               "ended_at": "2030-01-01T00:00:00+00:00"}))
    again = make_runner()
    again.poll()
    assert (again.jobs[1].outcome, again.jobs[1].exit_code) == ("lost", None)
    assert [e for e in events(again) if e[1] == "ended"] == [(1, "ended", "lost", None)]


def test_start_is_idempotent(make_runner) -> None:
    runner = make_runner()
    assert runner.start(job(1, ["true"]))
    assert not runner.start(job(1, ["true"]))
    wait_ended(runner, 1)
    assert [e[1] for e in events(runner)] == ["started", "ended"]
