"""Device scrub after a job, over the fake harness: a job's marker in its device's memory is
gone before the next job, a failing scrub is reported with its reason, and a device is never
scrubbed under a job that still uses it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agents.fake import device_memory, tool_command
from agents.runner import Runner
from agents.scrub import Scrubber, device_class
from agents.users import UserPolicy
from tests.agents.test_runner import GPU_A, GPU_B, MIG, NPU_1, job, wait_ended


def scrubber(fixture: Path | None = None, timeout_s: float = 30.0) -> Scrubber:
    command = tool_command("scrub") + (["--fixture", str(fixture)] if fixture else []) + ["{uuid}"]
    return Scrubber({"nvidia": command}, timeout_s)


def make(tmp_path: Path, scrub: Scrubber) -> Runner:
    return Runner(tmp_path / "state", "node-1", kill_grace_s=0.5, base_env={"PATH": os.environ["PATH"]},
                  users=UserPolicy(default_user="root", allow_root=True), scrubber=scrub)


def scrubbed(runner: Runner, job_id: int, timeout_s: float = 15.0) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runner.poll()
        found = [e for _, e in runner.outbox.pending() if e.job_id == job_id and e.kind == "scrubbed"]
        if found:
            return found[0].scrubbed
        time.sleep(0.02)
    raise AssertionError(f"job {job_id}'s devices were not scrubbed within {timeout_s} s")


def kinds(runner: Runner, job_id: int) -> list[str]:
    return [e.kind for _, e in runner.outbox.pending() if e.job_id == job_id]


def write_marker(uuid: str, state: Path) -> list[str]:
    memory = device_memory(state, uuid)
    return ["sh", "-c", f"echo secret > {memory}/marker"]


def test_the_next_job_never_sees_the_last_ones_marker(tmp_path: Path, fake_state: Path) -> None:
    runner = make(tmp_path, scrubber())
    memory = device_memory(fake_state, GPU_A.uuid)
    runner.start(job(1, write_marker(GPU_A.uuid, fake_state), devices=[GPU_A]))
    assert wait_ended(runner, 1).outcome == "succeeded"
    ended = next(e for _, e in runner.outbox.pending() if e.kind == "ended")
    assert ended.scrubbing == [GPU_A.uuid]
    [result] = scrubbed(runner, 1)
    assert (result.uuid, result.error) == (GPU_A.uuid, None)
    assert kinds(runner, 1) == ["started", "ended", "scrubbed"]
    assert list(memory.iterdir()) == []
    runner.start(job(2, ["ls", "-A", str(memory)], devices=[GPU_A]))
    wait_ended(runner, 2)
    assert runner.store.log_path(2).read_text() == ""


def test_a_failing_scrub_is_reported_with_its_reason(tmp_path: Path, fake_state: Path, write_fixture) -> None:
    fixture = write_fixture("scrub-fails", 'extends = "l4-2"\n[faults]\nscrub = "fail"\n')
    runner = make(tmp_path, scrubber(fixture))
    runner.start(job(1, write_marker(GPU_A.uuid, fake_state), devices=[GPU_A]))
    wait_ended(runner, 1)
    [result] = scrubbed(runner, 1)
    assert result.error == (f"{tool_command('scrub')[0]} exited with status 1: "
                            f"scrub: {GPU_A.uuid}: device memory did not clear (fault injected by the fixture)")
    assert (device_memory(fake_state, GPU_A.uuid) / "marker").exists()


def test_a_scrub_past_its_time_has_failed(tmp_path: Path, fake_state: Path, write_fixture) -> None:
    fixture = write_fixture("scrub-slow", 'extends = "l4-2"\n[faults]\nscrub_delay_s = 30\n')
    runner = make(tmp_path, scrubber(fixture, timeout_s=0.3))
    runner.start(job(1, ["true"], devices=[GPU_A]))
    wait_ended(runner, 1)
    [result] = scrubbed(runner, 1)
    assert result.error == f"{tool_command('scrub')[0]} did not finish within scrub_timeout_s (0.3 s)"


def test_a_job_waits_for_the_scrub_of_its_device(tmp_path: Path, fake_state: Path, write_fixture) -> None:
    fixture = write_fixture("scrub-slow", 'extends = "l4-2"\n[faults]\nscrub_delay_s = 1\n')
    runner = make(tmp_path, scrubber(fixture))
    runner.start(job(1, ["true"], devices=[GPU_A]))
    wait_ended(runner, 1)
    runner.poll()  # the scrub starts
    assert runner.scrubbing() == {GPU_A.uuid}
    assert not runner.start(job(2, ["true"], devices=[GPU_A]))  # listed again by the daemon later
    assert not runner.known(2)
    assert runner.start(job(3, ["true"], devices=[GPU_B]))  # other devices are not held up
    scrubbed(runner, 1)
    assert runner.start(job(2, ["true"], devices=[GPU_A]))


def test_a_device_still_in_use_is_left_for_the_last_job(tmp_path: Path, fake_state: Path) -> None:
    runner = make(tmp_path, scrubber())
    runner.start(job(1, ["sleep", "30"], devices=[GPU_A]))  # a share of GPU A
    runner.start(job(2, ["true"], devices=[GPU_A, GPU_B]))
    wait_ended(runner, 2)
    assert next(e for _, e in runner.outbox.pending() if e.kind == "ended").scrubbing == [GPU_B.uuid]
    runner.cancel(1)
    wait_ended(runner, 1)
    assert [r.uuid for r in scrubbed(runner, 1)] == [GPU_A.uuid]


def test_a_job_that_never_ran_leaves_nothing_to_scrub(tmp_path: Path, fake_state: Path) -> None:
    runner = make(tmp_path, scrubber())
    runner.start(job(1, ["true"], devices=[GPU_A], user="no-such-user-xyz"))
    wait_ended(runner, 1)
    runner.poll()
    assert kinds(runner, 1) == ["ended"] and runner.jobs[1].scrubbing == []


def test_a_restart_mid_scrub_runs_it_again(tmp_path: Path, fake_state: Path, write_fixture) -> None:
    fixture = write_fixture("scrub-slow", 'extends = "l4-2"\n[faults]\nscrub_delay_s = 0.5\n')
    runner = make(tmp_path, scrubber(fixture))
    runner.start(job(1, write_marker(GPU_A.uuid, fake_state), devices=[GPU_A]))
    wait_ended(runner, 1)
    runner.poll()
    del runner  # the agent dies while the scrub runs

    again = make(tmp_path, scrubber())
    assert again.scrubbing() == {GPU_A.uuid}
    assert scrubbed(again, 1)[0].error is None
    assert list(device_memory(fake_state, GPU_A.uuid).iterdir()) == []
    assert kinds(again, 1) == ["started", "ended", "scrubbed"]


@pytest.mark.parametrize(("device", "key"), [(GPU_A, "nvidia"), (MIG, "nvidia-mig"), (NPU_1, "huawei")])
def test_devices_are_scrubbed_by_their_class(device, key) -> None:
    assert device_class(device) == key
    scrub = Scrubber({key: ["scrub", "{uuid}", "{index}", "{bus_id}", "{parent_uuid}", "{kind}", "{job_id}"]})
    assert scrub.command(device, 12) == ["scrub", device.uuid, str(device.index), "", device.parent_uuid or "", device.kind, "12"]
    assert Scrubber({"amd": ["x"]}).command(device, 12) is None
