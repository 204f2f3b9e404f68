"""Preemption across both programs: a live daemon and a real agent over the fake-device harness.

A running job that ignores SIGTERM is preempted through the service (as the scheduling pass
will): its agent sends SIGTERM, waits the job's own grace_period (not the agent's much longer
kill_grace_s), sends SIGKILL; the job is pending again, the same job, with the reason saying
who took its devices; the preempting job runs on them; then the job is placed again, its agent
starts the next run of it afresh, and it runs to its end with the output of both runs in its log.
"""

from __future__ import annotations

import time

import pytest

from poold.db.session import make_sessionmaker, open_store, transaction
from poold.services import preemption
from tests.live import LiveDaemon, wait_for
from tests.test_end_to_end import Agent, ended, scratch, submit  # noqa: F401 (scratch: a fixture)

AGENT_GRACE_S = 60  # the agent's own kill_grace_s: a preemption must not wait for it


@pytest.fixture
def site(tmp_path):
    daemon = LiveDaemon(tmp_path / "daemon")
    fake_state = tmp_path / "fake"
    fake_state.mkdir()
    client = daemon.client()
    agent = None
    try:
        agent = Agent(daemon, "l4", "l4-2", tmp_path / "agents" / "l4", fake_state, {"POOLD_AGENT_KILL_GRACE_S": str(AGENT_GRACE_S)})
        wait_for(lambda: [n["name"] for n in client.nodes() if n["state"] == "ready"] == ["l4"], timeout_s=30)
        yield daemon, client
    finally:
        client.close()
        if agent is not None:
            agent.stop()
        daemon.stop()


def test_a_preempted_job_is_killed_after_its_grace_requeued_and_runs_again(site, scratch):
    daemon, client = site
    go = scratch / "go"
    # Ignores SIGTERM (the trap is inherited by sleep too); ends by itself once `go` exists.
    victim, taker = _one_l4_held_and_both_wanted(client, go, "trap '' TERM; ", "", 'queue = "interactive"\n')
    assert client.job(taker)["state"] == "pending"  # one of the two L4s is held

    engine = open_store(f"sqlite:///{daemon.state_dir / 'poold.db'}")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            preemption.preempt(session, victim, taker, "queue interactive is below its guarantee of L4 = 2", grace_s_cap=300)
    finally:
        engine.dispose()
    began = time.monotonic()
    seen = wait_for(lambda: (job := client.job(victim))["state"] == "pending" and job, timeout_s=30)
    assert time.monotonic() - began < AGENT_GRACE_S / 2  # its own grace of 1 s, not the agent's 60 s
    assert (seen["preemptions"], seen["preempted_by"], seen["stopping"]) == (1, taker, False)
    assert seen["preempt_reason"] == "queue interactive is below its guarantee of L4 = 2"
    kinds = [e["kind"] for e in seen["events"]]
    assert kinds.index("job.preempt_requested") < kinds.index("job.preempted") < kinds.index("job.requeued")
    [preempted] = [e["message"] for e in seen["events"] if e["kind"] == "job.preempted"]
    assert "SIGKILL" in preempted and f"for job {taker}" in preempted
    [requeued] = [e["message"] for e in seen["events"] if e["kind"] == "job.requeued"]
    assert f"preempted for job {taker}; queue interactive is below" in requeued

    assert ended(client, taker)["state"] == "succeeded", client.job(victim)  # on the devices taken for it
    go.touch()
    job = ended(client, victim, timeout_s=60)
    assert job["state"] == "succeeded", job
    assert job["node"] == "l4" and "job.cancelled" not in [e["kind"] for e in job["events"]]
    assert [e["kind"] for e in job["events"]].count("job.started") == 2
    assert wait_for(lambda: (log := client.log(victim).decode()).endswith("done\n") and log) == "run\nrun\ndone\n"


def test_the_pass_preempts_a_lower_priority_job_of_the_queue_for_a_higher_one(site, scratch):
    """No service call this time: the scheduling pass chooses the victim. A job of priority
    10 needs both L4s; the job of priority -5 of the same queue holding one is the cheapest
    victim (the only one). It is stopped, requeued, and runs again once the other has ended."""
    daemon, client = site
    go = scratch / "go"
    victim, taker = _one_l4_held_and_both_wanted(client, go, "", "priority = -5\n", "priority = 10\n")
    seen = wait_for(lambda: (job := client.job(victim))["preemptions"] == 1 and job, timeout_s=30)
    assert seen["preempted_by"] == taker and "higher priority" in seen["preempt_reason"]
    assert ended(client, taker)["state"] == "succeeded"
    go.touch()
    job = ended(client, victim, timeout_s=60)
    assert job["state"] == "succeeded", job
    assert [e["kind"] for e in job["events"]].count("job.started") == 2


def _one_l4_held_and_both_wanted(client, go, trap: str, victim_keys: str, taker_keys: str) -> tuple[int, int]:
    """A job holding one of the two L4s, running until ``go`` exists (``trap`` before its
    loop), and a job wanting both; returns their ids once the first runs and the second is
    submitted."""
    command = f"{trap}echo run; while [ ! -e {go} ]; do sleep 0.2; done; echo done"
    victim = submit(client, f'name = "long"\n{victim_keys}command = ["sh", "-c", "{command}"]\ngrace_period = "1s"\n'
                            '[resources]\nkind = "gpu"\ncount = 1\n')
    wait_for(lambda: client.job(victim)["state"] == "running" and b"run" in client.log(victim))
    taker = submit(client, f'name = "urgent"\n{taker_keys}command = ["sh", "-c", "echo urgent"]\n'
                           '[resources]\nkind = "gpu"\ncount = 2\n')
    return victim, taker
