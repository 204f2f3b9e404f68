"""Security and isolation across both programs: a live daemon and real agents (as root where
the machine allows) over the fake-device harness.

A job without ``user`` runs as the agents' default user, not root; a job over its
``host_memory`` is killed by its cgroup and ends failed saying so; a cancelled job's cgroup is
empty afterwards; a job cannot open a device it was not given; a job's marker in its device's
memory is scrubbed before the next job there; a failing scrub quarantines the device.

Each case says the isolation level the agents got here, and skips what this machine cannot
do (no root, no cgroup hierarchy with cpu and memory, no device control), saying why.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from agents import cgroups
from agents.fake import tool_command
from tests.agents.cgroup_support import fresh_parent, parent_dirs
from tests.agents.test_cgroups import PROBE
from tests.live import LiveDaemon, wait_for
from tests.test_end_to_end import Agent, ended, submit


def scrub_setting(fixture: Path | str) -> str:
    """``scrub`` for the agent's environment: the fake scrub for NVIDIA GPUs, as TOML."""
    return "{ nvidia = " + json.dumps([*tool_command("scrub"), "--fixture", str(fixture), "{uuid}"]) + " }"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation")
    parents = fresh_parent()
    parent = next(parents)
    driver, why = cgroups.detect(parent)
    level = driver.level if driver is not None else "env"
    print(f"isolation on this machine: {why}")
    slow = root / "l4-slow-scrub.toml"
    slow.write_text('extends = "l4-2"\n[faults]\nscrub_delay_s = 1\n')
    failing = root / "t4-scrub-fails.toml"
    failing.write_text('extends = "t4"\n[faults]\nscrub = "fail"\n')
    daemon = LiveDaemon(root / "daemon")
    fake_state = root / "fake"
    fake_state.mkdir()
    client = daemon.client()  # an admin: some jobs here name user root
    agents: dict[str, Agent] = {}
    try:
        for node, fixture in (("l4", slow), ("t4", failing)):
            env = {"POOLD_AGENT_CGROUP_PARENT": parent, "POOLD_AGENT_ALLOW_ROOT": "true", "POOLD_AGENT_SCRUB": scrub_setting(fixture)}
            agents[node] = Agent(daemon, node, str(fixture), root / "agents" / node, fake_state, env)
        wait_for(lambda: {n["name"] for n in client.nodes() if n["state"] == "ready"} >= set(agents), timeout_s=30)
        yield client, root, fake_state, level, parent, daemon.cli_env
    finally:
        client.close()
        for agent in agents.values():
            agent.stop()
        daemon.stop()
        next(parents, None)


def needs(level: str, have: str) -> None:
    order = ["env", "cgroup", "cgroup+devices"]
    if order.index(have) < order.index(level):
        pytest.skip(f"needs isolation {level}; the agents here got {have}")


def test_a_job_without_user_runs_as_the_default_user(site):
    client, _, _, level, _, cli_env = site
    if os.geteuid() != 0:
        pytest.skip("an agent that is not root runs jobs as itself")
    job_id = submit(client, 'name = "who"\ncommand = ["id", "-u"]\n[resources]\n[[resources.accept]]\nmodel = "L4"\n')
    job = ended(client, job_id)
    assert job["state"] == "succeeded", job
    assert wait_for(lambda: client.log(job_id).decode()).strip() == str(pwd.getpwnam("nobody").pw_uid)
    assert job["isolation"] == level
    started = next(e for e in job["events"] if e["kind"] == "job.started")
    assert f"isolation {level}" in started["message"]
    shown = subprocess.run([sys.executable, "-m", "poold", "--url", client.url, "job", str(job_id)],
                           capture_output=True, text=True, timeout=60, env={**cli_env, "COLUMNS": "200"})
    assert f"isolation: {level}" in shown.stdout.splitlines()


def test_a_job_over_its_host_memory_fails_saying_so(site):
    client, _, _, level, _, _ = site
    needs("cgroup", level)
    # `tail` keeps its last line, here 400 MB without a newline, in memory: far past 32 MiB.
    command = '["sh", "-c", "head -c 400000000 /dev/zero | tail -n 1 > /dev/null"]'
    job_id = submit(client, f'name = "hog"\ncommand = {command}\n[resources]\nkind = "cpu"\nhost_memory = "32MiB"\n')
    job = ended(client, job_id)
    assert job["state"] == "failed", job
    failed = next(e for e in job["events"] if e["kind"] == "job.failed")
    assert "exceeded its host_memory of 32 MiB: the kernel's OOM killer stopped" in failed["message"]


def test_a_cancelled_jobs_cgroup_is_empty_afterwards(site):
    client, _, _, level, parent, _ = site
    needs("cgroup", level)
    job_id = submit(client, 'name = "held"\ncommand = ["sh", "-c", "cat /proc/self/cgroup; sleep 300"]\n'
                            '[resources]\nkind = "cpu"\ncpu_cores = 1\n')
    lines = wait_for(lambda: client.log(job_id).decode().splitlines())
    suffix = next(line.split(":", 2)[2] for line in lines if line.endswith(f"/job-{job_id}"))
    dirs = [d / f"job-{job_id}" for d in parent_dirs(parent) if d.exists()]
    assert dirs and all(str(d).endswith(suffix) for d in dirs)
    assert cgroups.JobCgroup(dirs).pids()
    client.cancel(job_id)
    assert ended(client, job_id)["state"] == "cancelled"
    assert not any(d.exists() for d in dirs)


def test_a_job_cannot_open_a_device_it_was_not_given(site):
    client, root, _, level, _, _ = site
    needs("cgroup+devices", level)
    gpus = sorted((d for d in client.devices("l4") if d["kind"] == "gpu"), key=lambda d: d["index"])
    files = [gpu["attributes"]["device_files"][0] for gpu in gpus]
    assert files == [str(root / "agents" / "l4" / "fake-devices" / "dev" / f"nvidia{i}") for i in range(2)]
    command = json.dumps([sys.executable, "-c", PROBE, *files])
    job_id = submit(client, f'name = "probe"\nuser = "root"\ncommand = {command}\n'
                            '[resources]\n[[resources.accept]]\nmodel = "L4"\n')
    job = ended(client, job_id)
    assert job["state"] == "succeeded", job
    [mine] = [gpu["index"] for gpu in gpus if gpu["uuid"] == job["allocations"][0]["device_uuid"]]
    seen = dict(line.split(" ", 1) for line in wait_for(lambda: client.log(job_id).decode()).splitlines())
    # Root in the job, and still: its own GPU's file opens as far as the missing driver
    # (ENXIO), the other GPU's is refused by the cgroup (EPERM).
    assert seen == {files[mine]: "ENXIO", files[1 - mine]: "EPERM"}


def test_the_next_job_never_sees_the_last_ones_marker(site):
    client, _, fake_state, _, _, _ = site
    write = f'for uuid in $(echo $CUDA_VISIBLE_DEVICES | tr , " "); do mkdir -p {fake_state}/memory/$uuid; echo secret > {fake_state}/memory/$uuid/marker; done'
    first = submit(client, f'name = "leaves"\nuser = "root"\ncommand = ["sh", "-c", {json.dumps(write)}]\n'
                           '[resources]\ncount = 2\n[[resources.accept]]\nmodel = "L4"\n')
    assert ended(client, first)["state"] == "succeeded"
    # The scrub takes a second here: meanwhile both GPUs say so, and take no job.
    scrubbing = wait_for(lambda: [d["scrubbing"] for d in client.devices("l4") if d["scrubbing"]], timeout_s=10)
    assert [entry["job_id"] for entry in scrubbing] == [first, first]
    read = f'for uuid in $(echo $CUDA_VISIBLE_DEVICES | tr , " "); do ls -A {fake_state}/memory/$uuid; done; echo read'
    second = submit(client, f'name = "looks"\nuser = "root"\ncommand = ["sh", "-c", {json.dumps(read)}]\n'
                            '[resources]\ncount = 2\n[[resources.accept]]\nmodel = "L4"\n')
    assert ended(client, second)["state"] == "succeeded"
    assert wait_for(lambda: client.log(second).decode()).strip() == "read"  # no marker left
    kinds = [e["kind"] for e in client.job(first)["events"]]
    assert kinds.count("device.scrubbing") == 2 and kinds.count("device.scrubbed") == 2
    # Order: the end, both devices out of placement, both scrubbed; only then the next job.
    scrubbed_at = max(e["at"] for e in client.job(first)["events"] if e["kind"] == "device.scrubbed")
    assert client.job(second)["placed_at"] >= scrubbed_at


def test_a_failing_scrub_quarantines_the_device(site):
    client, _, _, _, _, _ = site
    job_id = submit(client, 'name = "t4"\ncommand = ["true"]\n[resources]\n[[resources.accept]]\nmodel = "T4"\n')
    assert ended(client, job_id)["state"] == "succeeded"
    [gpu] = wait_for(lambda: [d for d in client.devices("t4") if (d.get("quarantine") or {}).get("held")])
    assert gpu["quarantine"]["reason"].startswith("scrub failed: ")
    assert "device memory did not clear" in gpu["quarantine"]["reason"]
    assert gpu["scrubbing"] is None and gpu["health"] == "ok"
