"""The whole pool: a live daemon and real agent processes over the fake-device harness, over
HTTPS with the certificates ``poold tls init`` made (agents and the CLI verify them against
its CA), the agents joined with a join token.

Covers what a user relies on across both programs: a MIG job sees exactly its slice, a
CPU-only job sees no device, a cancelled job's whole process tree is gone, an agent killed (SIGKILL) and restarted in the
middle of a job loses no outcome, an XID reported by a fake GPU takes it out of service, and
a client that does not trust the site's CA is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from poold import tls
from poold.client import PooldClient
from poold.jobspec import parse_job_text
from tests.agents.cgroup_support import fresh_parent
from tests.live import LiveDaemon, wait_for


class Agent:
    def __init__(self, daemon: LiveDaemon, node: str, fixture: str, state_dir: Path, fake_state: Path,
                 extra_env: dict[str, str] | None = None):
        self.args = [sys.executable, "-c", "from agents.cli import main; main()", "run", "--server", daemon.url,
                     "--node", node, "--fake", fixture, "--state-dir", str(state_dir)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("POOLD_")}
        self.env.update({"POOLD_AGENT_POLL_INTERVAL_S": "0.2", "POOLD_AGENT_KILL_GRACE_S": "2", "POOLD_FAKE_STATE": str(fake_state),
                         "POOLD_AGENT_JOIN_TOKEN": daemon.tokens.join})
        if daemon.ca_file:
            self.env["POOLD_AGENT_CA_FILE"] = str(daemon.ca_file)
        self.env.update(extra_env or {})
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.log_path = state_dir.parent / f"agent-{node}.log"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the agent alone (its jobs run under their own shims and sessions)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="module")
def cgroup_parent():
    """The agents' cgroups (where this machine gives jobs cgroups) go under a parent of this module's own."""
    yield from fresh_parent()


@pytest.fixture
def scratch():
    """A directory jobs can write into whoever they run as (the agents' default user, nobody, where they run as root)."""
    path = Path(tempfile.mkdtemp(prefix="poold-e2e-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory, cgroup_parent):
    root = tmp_path_factory.mktemp("site")
    tls.init(root / "tls", ["127.0.0.1", "localhost"])
    daemon = LiveDaemon(root / "daemon", tls=root / "tls")
    fake_state = root / "fake"
    fake_state.mkdir()
    agents: dict[str, Agent] = {}
    client = daemon.client(daemon.tokens.user)
    env = {"POOLD_AGENT_CGROUP_PARENT": cgroup_parent}
    try:
        agents["hgx"] = Agent(daemon, "hgx", "hgx-h100-mig", root / "agents" / "hgx", fake_state, env)
        agents["l4"] = Agent(daemon, "l4", "l4-2", root / "agents" / "l4", fake_state, env)
        wait_for(lambda: {n["name"] for n in client.nodes() if n["state"] == "ready"} >= set(agents), timeout_s=30)
        yield daemon, agents, client, fake_state
    finally:
        client.close()
        for agent in agents.values():
            agent.stop()
        daemon.stop()


def submit(client: PooldClient, text: str) -> int:
    return client.submit(parse_job_text(text).model_dump(mode="json"))["id"]


def ended(client: PooldClient, job_id: int, timeout_s: float = 30) -> dict:
    return wait_for(lambda: (job := client.job(job_id))["state"] in {"succeeded", "failed", "cancelled", "timed_out", "lost"} and job, timeout_s)


def test_mig_job_sees_only_its_slice(site):
    _, _, client, _ = site
    job_id = submit(client, 'name = "nb"\ncommand = ["sh", "-c", "echo CUDA=$CUDA_VISIBLE_DEVICES"]\n[resources]\nmig_profile = "1g.10gb"\n')
    job = ended(client, job_id)
    assert job["state"] == "succeeded", job
    [alloc] = job["allocations"]
    assert alloc["device_uuid"].startswith("MIG-")
    log = wait_for(lambda: client.log(job_id).decode())
    assert log.strip() == f"CUDA={alloc['device_uuid']}"


def test_cpu_only_job_runs_with_no_device_visible(site):
    _, _, client, _ = site
    job_id = submit(client, 'name = "prep"\ncommand = ["sh", "-c", "echo CUDA=[$CUDA_VISIBLE_DEVICES]"]\n'
                            '[resources]\nkind = "cpu"\ncpu_cores = 2\nhost_memory = "1GiB"\n')
    job = ended(client, job_id)
    assert job["state"] == "succeeded", job
    assert job["allocations"] == [] and job["node"] in {"hgx", "l4"}
    assert wait_for(lambda: client.log(job_id).decode()).strip() == "CUDA=[]"


def test_cancel_kills_the_whole_tree(site, scratch):
    _, _, client, _ = site
    pids = scratch / "pids"
    # The job starts a grandchild in a new session (escaping the process group) and waits.
    command = f"echo $$ > {pids}; setsid sleep 300 & echo $! >> {pids}; wait"
    job_id = submit(client, f'name = "tree"\ncommand = ["sh", "-c", "{command}"]\n[resources]\nkind = "gpu"\n[[resources.accept]]\nmodel = "L4"\n')
    wait_for(lambda: client.job(job_id)["state"] == "running" and pids.exists() and len(pids.read_text().split()) == 2)
    tree = [int(pid) for pid in pids.read_text().split()]
    assert all(psutil.pid_exists(pid) for pid in tree)
    client.cancel(job_id)
    job = ended(client, job_id)
    assert job["state"] == "cancelled"
    wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in tree), timeout_s=10)


def test_agent_killed_mid_job_loses_no_outcome(site, scratch):
    _, agents, client, _ = site
    go = scratch / "go"
    command = f"while [ ! -e {go} ]; do sleep 0.1; done; echo done; exit 7"
    job_id = submit(client, f'name = "survivor"\ncommand = ["sh", "-c", "{command}"]\n[resources]\nkind = "gpu"\n[[resources.accept]]\nmodel = "L4"\n')
    wait_for(lambda: client.job(job_id)["state"] == "running")
    agents["l4"].kill()
    go.touch()  # the job ends while its agent is dead
    time.sleep(1.0)
    assert client.job(job_id)["state"] == "running"
    agents["l4"].start()
    job = ended(client, job_id)
    assert job["state"] == "failed" and job["exit_code"] == 7
    kinds = [e["kind"] for e in job["events"]]
    assert kinds.count("job.failed") == 1 and "job.conflicting_outcome" not in kinds
    assert wait_for(lambda: "done" in client.log(job_id).decode())


def test_xid_marks_the_gpu_unhealthy_at_once(site):
    daemon, _, client, fake_state = site
    devices = [d for d in client.devices("hgx") if d["parent_uuid"] is None and d["index"] == 7]
    [gpu7] = devices
    with open(fake_state / "xid", "a") as handle:
        handle.write(f"{gpu7['uuid']} 79\n")
    wait_for(lambda: next(d for d in client.devices("hgx") if d["uuid"] == gpu7["uuid"])["health"] == "unhealthy", timeout_s=10)
    reason = next(d for d in client.devices("hgx") if d["uuid"] == gpu7["uuid"])["health_reason"]
    assert "79" in reason


def test_the_agents_joined_with_their_own_credentials_and_the_cli_trusts_only_the_sites_ca(site):
    daemon, agents, _, _ = site
    credentials = {t["node"]: t for t in daemon.client().tokens() if t["role"] == "agent"}
    assert set(credentials) == set(agents) and all(t["expires_at"] is None for t in credentials.values())
    for agent in agents.values():
        kept = agent.state_dir / "credential.json"
        assert kept.stat().st_mode & 0o777 == 0o600 and json.loads(kept.read_text())["joined"]
    nodes = subprocess.run([sys.executable, "-m", "poold", "nodes"], capture_output=True, text=True, env=daemon.cli_env, timeout=60)
    assert nodes.returncode == 0 and "hgx" in nodes.stdout, nodes.stderr
    stranger = {key: value for key, value in daemon.cli_env.items() if key != "POOLD_CA_FILE"}
    refused = subprocess.run([sys.executable, "-m", "poold", "nodes"], capture_output=True, text=True, env=stranger, timeout=60)
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr and "Traceback" not in refused.stderr
