"""A gang over live agents: a daemon and two agents on fake 8xH100 nodes of one network, a
16-GPU job split over both. Each part starts with the distributed-training variables, the same
gang seen from both sides; one part failing stops the other and the job ends failed, naming it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents.fake.fixture_file import FIXTURE_DIR
from tests.agents.cgroup_support import fresh_parent
from tests.live import LiveDaemon, wait_for
from tests.test_end_to_end import Agent, ended, scratch, submit  # noqa: F401,F811 - scratch is a fixture

GANG_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "NNODES", "MASTER_ADDR", "MASTER_PORT",
             "POOLD_NODES", "POOLD_GANG_ID", "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE", "CUDA_VISIBLE_DEVICES")


@pytest.fixture(scope="module")
def gang_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("gang-site")
    shipped = (FIXTURE_DIR / "hgx-h100-8.toml").read_text()
    # A second node of the same make: its own hostname and GPU uuids.
    second = root / "hgx-h100-b.toml"
    second.write_text(shipped.replace('hostname = "hgx-h100-a"', 'hostname = "hgx-h100-b"').replace("GPU-a0a0a0a0", "GPU-b0b0b0b0"))
    daemon = LiveDaemon(root / "daemon")
    fake_state = root / "fake"
    fake_state.mkdir()
    agents: dict[str, Agent] = {}
    client = daemon.client(daemon.tokens.user)
    parents = fresh_parent()
    env = {"POOLD_AGENT_CGROUP_PARENT": next(parents), "POOLD_AGENT_NETWORK": "ib-fabric-1"}
    try:
        agents["hgx-a"] = Agent(daemon, "hgx-a", "hgx-h100-8", root / "agents" / "hgx-a", fake_state, env)
        agents["hgx-b"] = Agent(daemon, "hgx-b", str(second), root / "agents" / "hgx-b", fake_state, env)
        wait_for(lambda: {n["name"] for n in client.nodes() if n["state"] == "ready"} >= set(agents), timeout_s=30)
        yield daemon, client
    finally:
        client.close()
        for agent in agents.values():
            agent.stop()
        daemon.stop()
        parents.close()


def gang_job(name: str, script: str) -> str:
    return f'name = "{name}"\ncommand = ["sh", "-c", "{script}"]\n[resources]\ncount = 16\nsame_node = false\n'


def env_of(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs if key in GANG_VARS}


def test_a_16_gpu_job_over_two_8xh100_nodes_starts_both_parts_with_consistent_ranks(gang_site, scratch):
    _, client = gang_site
    assert {node["network"] for node in client.nodes()} == {"ib-fabric-1"}
    job_id = submit(client, gang_job("ddp", f"env > {scratch}/env-$NODE_RANK"))
    job = ended(client, job_id, timeout_s=60)
    assert job["state"] == "succeeded", job
    parts = job["parts"]
    assert [p["rank"] for p in parts] == [0, 1] and {p["node"] for p in parts} == {"hgx-a", "hgx-b"}
    assert all(p["state"] == "succeeded" and p["devices"] == 8 for p in parts)
    seen = [env_of(scratch / f"env-{rank}") for rank in (0, 1)]
    for rank, env in enumerate(seen):
        # 2 parts of 8: WORLD_SIZE 16; rank 1's first process is global rank 8.
        assert (env["WORLD_SIZE"], env["RANK"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("16", str(8 * rank), "0", "8")
        assert (env["NODE_RANK"], env["NNODES"], env["PET_NODE_RANK"], env["PET_NNODES"]) == (str(rank), "2", str(rank), "2")
        assert env["POOLD_GANG_ID"] == str(job_id) and len(env["CUDA_VISIBLE_DEVICES"].split(",")) == 8
    # The same gang from both sides: one master, one port, one node list, rank 0's node first.
    rank0_host = {"hgx-a": "hgx-h100-a", "hgx-b": "hgx-h100-b"}[parts[0]["node"]]
    assert seen[0]["MASTER_ADDR"] == seen[1]["MASTER_ADDR"] == rank0_host
    assert seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"] == str(29500 + job_id % 1000)
    assert seen[0]["POOLD_NODES"] == seen[1]["POOLD_NODES"] == ",".join({"hgx-a": "hgx-h100-a", "hgx-b": "hgx-h100-b"}[p["node"]] for p in parts)
    # Each part sees only its own node's GPUs: 16 distinct uuids, 8 from each node.
    uuids = [set(env["CUDA_VISIBLE_DEVICES"].split(",")) for env in seen]
    assert not uuids[0] & uuids[1] and {u[:12] for u in uuids[0] | uuids[1]} == {"GPU-a0a0a0a0", "GPU-b0b0b0b0"}



def test_poold_job_lists_the_parts_and_poold_plan_each_rank(gang_site, tmp_path):
    daemon, client = gang_site
    job_id = submit(client, gang_job("listed", "true"))
    job = ended(client, job_id, timeout_s=60)

    def poold(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "poold", "--url", daemon.url, *args], capture_output=True, text=True,
                              timeout=60, env=daemon.cli_env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    table = poold("job", str(job_id))
    assert "parts (gang)" in table
    for part in job["parts"]:
        assert str(part["id"]) in table and part["node"] in table
    path = tmp_path / "gang.toml"
    path.write_text(gang_job("planned", "true"))
    planned = poold("plan", str(path))
    assert "a gang of 2 parts" in planned and "rank 0" in planned and "rank 1" in planned


def test_failing_one_part_stops_the_other_and_the_job_ends_failed_with_that_cause(gang_site, scratch):
    _, client = gang_site
    # Rank 0 waits; rank 1 fails (exit 3) once rank 0 has started.
    script = (f"env > {scratch}/env-$NODE_RANK; if [ $NODE_RANK = 1 ]; then while [ ! -f {scratch}/env-0 ]; do sleep 0.1; done; exit 3; fi; "
              f"echo $$ > {scratch}/pid-0; exec sleep 300")
    job_id = submit(client, gang_job("ddp-fail", script))
    job = ended(client, job_id, timeout_s=60)
    parts = {p["rank"]: p for p in job["parts"]}
    assert job["state"] == "failed" and job["exit_code"] == 3, job
    assert job["reason"] == f"part job {parts[1]['id']} (rank 1) on node {parts[1]['node']} failed (exit 3)"
    # The other part is stopped by its agent: cancelled, its process gone, its devices free again.
    stopped = wait_for(lambda: (part := client.job(parts[0]["id"]))["state"] in {"cancelled", "failed"} and part, timeout_s=30)
    assert stopped["state"] == "cancelled"
    assert (scratch / "pid-0").exists()
    pid = int((scratch / "pid-0").read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout_s=15)
    assert any(e["kind"] == "job.cancel_requested" and f"stopped with its gang job {job_id}" in e["message"] for e in stopped["events"])
