"""``poold cancel --force``: any job before its end ends ``cancelled`` at once, its devices, CPU
cores and memory are released, the scheduler sees them free, and an agent that still runs the
job is told to kill it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from poold.db.models import AllocationModel, NodeModel
from tests.api.calls import heartbeat, register, report, submit
from tests.builders import make_node


def active_allocations(pool, job_id: int) -> int:
    with pool.factory() as session:
        return session.scalar(select(func.count()).select_from(AllocationModel)
                              .where(AllocationModel.job_id == job_id, AllocationModel.released_at.is_(None)))


def generation(pool, name: str) -> int:
    with pool.factory() as session:
        return session.scalar(select(NodeModel.generation).where(NodeModel.name == name))


def test_force_ends_a_running_job_now_frees_its_devices_and_tells_the_agent_to_kill_it(api, pool):
    node = make_node("l4", cpu_cores=8).gpus(1, "L4")
    register(api, node)
    stuck = submit(api, cpu_cores=6, host_memory="8GiB")
    waiting = submit(api, cpu_cores=6)  # the only GPU and 6 of 8 cores are held by the first
    assert report(api, "l4", stuck, "started", pid=42)["accepted"]
    assert heartbeat(api, node, running_jobs=[stuck]).status_code == 200
    assert active_allocations(pool, stuck) == 2  # the GPU, and the node's cores and memory
    assert api.get(f"/api/v1/jobs/{waiting}").json()["state"] == "pending"
    before = generation(pool, "l4")

    out = api.post(f"/api/v1/jobs/{stuck}/cancel", params={"force": "true"})
    assert out.status_code == 200, out.text
    assert out.json()["state"] == "cancelled"
    assert out.json()["reason"] == "cancelled by force while running on node l4"
    assert active_allocations(pool, stuck) == 0
    assert generation(pool, "l4") > before
    # The pass the cancel woke saw the GPU and the cores free.
    assert api.get(f"/api/v1/jobs/{waiting}").json()["state"] == "assigned"
    # The agent still reports it running: it is told to kill it.
    assert api.get("/api/v1/agents/l4/assignments").json()["cancel"] == [stuck]
    detail = api.get(f"/api/v1/jobs/{stuck}").json()
    assert detail["events"][-1]["kind"] == "job.cancelled"
    assert "cancelled by force while running on node l4; its allocations are released" in detail["events"][-1]["message"]

    # The agent kills it and says so (its exit code, not the daemon's none): accepted, noted.
    stopped = report(api, "l4", stuck, "ended", outcome="cancelled", exit_code=143, message="cancelled by the daemon")
    assert stopped["accepted"]
    after = api.get(f"/api/v1/jobs/{stuck}").json()
    assert (after["state"], after["exit_code"]) == ("cancelled", None)
    assert after["events"][-1]["kind"] == "job.stopped"
    heartbeat(api, node, running_jobs=[])
    assert api.get("/api/v1/agents/l4/assignments").json()["cancel"] == []


@pytest.mark.parametrize("state", ["pending", "assigned", "cancel_requested"])
def test_force_ends_a_job_in_any_state_before_its_end(api, pool, state):
    register(api, make_node("l4").gpus(1, "L4"))
    if state == "pending":
        submit(api)  # takes the GPU
    job_id = submit(api)
    if state == "cancel_requested":
        api.post(f"/api/v1/jobs/{job_id}/cancel")  # the agent never reports: the cancel never ends it
    out = api.post(f"/api/v1/jobs/{job_id}/cancel", params={"force": "true"}).json()
    assert out["state"] == "cancelled" and out["reason"].startswith("cancelled by force while ")
    assert active_allocations(pool, job_id) == 0
    again = api.post(f"/api/v1/jobs/{job_id}/cancel", params={"force": "true"})
    assert again.status_code == 409 and again.json()["detail"] == f"job {job_id} already ended (cancelled)"


def test_the_agent_is_told_to_kill_jobs_it_runs_that_the_daemon_does_not_hold_there(api):
    a, b = make_node("a").gpus(1, "L4"), make_node("b").gpus(1, "L4")
    register(api, a)
    elsewhere = submit(api)  # placed on a
    register(api, b)
    # b's agent reports a job placed on a, and one the daemon never had.
    heartbeat(api, b, running_jobs=[elsewhere, 999])
    assert api.get("/api/v1/agents/b/assignments").json() == {"start": [], "cancel": [elsewhere, 999], "stop": []}
    assert api.get("/api/v1/agents/a/assignments").json()["start"][0]["job_id"] == elsewhere
