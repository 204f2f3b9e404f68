"""``poold demo``: a small heterogeneous site on SQLite with fake devices, end to end.

The daemon and one agent per node run as real processes (the same code as production, the
agents over the mocked-device harness). The demo makes the site's tokens in the store before
the daemon starts (an admin's, user ``demo``'s, one join token for its nodes), as a site's
admin does with ``poold token create --local``; the agents join with the join token, and the
example jobs are submitted over HTTP as user ``demo``, placed, and really run as processes
that see only their devices. Everything is torn down at the end unless ``keep`` is set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil

from poold.client import ClientError, PooldClient
from poold.jobspec import parse_job_file, parse_job_text
from poold.shipped import shipped_path

if TYPE_CHECKING:  # the store's modules load when a site is prepared, not with every `poold` command
    from sqlalchemy.orm import Session, sessionmaker

# (node name, fixture): an HGX H100 with NVLink and GPU 0 in MIG mode, A100s, L4s,
# Ascend 910B NPUs and Alveo U250 FPGAs.
SITE = [
    ("hgx-h100", "hgx-h100-mig"),
    ("a100", "a100-4"),
    ("l4", "l4-2"),
    ("ascend", "ascend-910b-8"),
    ("alveo", "alveo-u250-2"),
]
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}

# A job that can never fit: more A100s than the site has. Refused at submit, saying why.
UNPLACEABLE_JOB = """
name = "too-big"
command = ["true"]
[resources]
count = 8
kind = "gpu"
[[resources.accept]]
model = "A100"
"""


class DemoError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SiteTokens:
    """What a new site starts with: an admin's token, user ``demo``'s, and a join token for its nodes."""

    admin: str
    user: str
    join: str


def issue_tokens(factory: sessionmaker[Session], nodes: int) -> SiteTokens:
    """Make a new site's tokens in the store (the join token brings ``nodes`` nodes within an hour)."""
    from poold.db.session import transaction
    from poold.services import tokens

    with transaction(factory) as session:
        made = [tokens.create(session, "admin", user="admin", note="made with the site"),
                tokens.create(session, "user", user="demo", note="made with the site"),
                tokens.create(session, "join", uses=nodes, note="made with the site")]
    return SiteTokens(*(issued.token for issued in made))


def prepare_site(database_url: str, nodes: int) -> SiteTokens:
    """Bring the store at ``database_url`` up to date and make its tokens (:func:`issue_tokens`)."""
    from poold.db import migrate
    from poold.db.session import make_sessionmaker, open_store

    engine = open_store(database_url)
    try:
        migrate.upgrade(engine)
        return issue_tokens(make_sessionmaker(engine), nodes)
    finally:
        engine.dispose()


@dataclass
class DemoPool:
    """A running demo pool: the daemon, its agents, their state directory, the site's tokens."""

    workdir: Path
    url: str
    tokens: SiteTokens
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    agent_metrics: dict[str, str] = field(default_factory=dict)  # node -> its agent's /metrics URL

    def client(self, token: str | None = None) -> PooldClient:
        """The API as ``token`` (default: the demo's user)."""
        return PooldClient(self.url, token=token or self.tokens.user)

    def stop(self, grace_s: float = 5.0) -> None:
        """Agents, then any job still running under them, then the daemon: nothing is left."""
        ordered = [name for name in self.processes if name != "daemon"] + ["daemon"]
        for name in ordered:
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name in ordered:
            process = self.processes.get(name)
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._kill_jobs()

    def _kill_jobs(self) -> None:
        """Agents leave their jobs running when they stop (by design); the demo must not.
        Each job runs under a shim that leads the job's process group, with its job dir
        (inside the demo's workdir) on its command line."""
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if "agents.shim" in cmdline and any(str(self.workdir) in part for part in cmdline):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def start_pool(workdir: Path, say: Callable[[str], None], timeout_s: float = 30.0) -> DemoPool:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database_url = f"sqlite:///{workdir / 'daemon' / 'poold.db'}"
    env = {
        **os.environ,
        "POOLD_CONFIG": str(shipped_path("config", "poold.toml")),
        "POOLD_STATE_DIR": str(workdir / "daemon"),
        "POOLD_DATABASE_URL": database_url,
        "POOLD_SERVER__PORT": str(port),
        "POOLD_SCHEDULER__INTERVAL_S": "0.5",
        "POOLD_NODES__HEARTBEAT_INTERVAL_S": "2",
        "POOLD_LOG_LEVEL": "WARNING",
    }
    env.pop("POOLD_URL", None)
    pool = DemoPool(workdir=workdir, url=url, tokens=prepare_site(database_url, len(SITE)))
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        _start(pool, env, log_dir, say, timeout_s)
    except BaseException:
        pool.stop()  # nothing may outlive a failed start
        raise
    return pool


def _start(pool: DemoPool, env: dict[str, str], log_dir: Path, say: Callable[[str], None], timeout_s: float) -> None:
    workdir, url = pool.workdir, pool.url
    pool.processes["daemon"] = _spawn([sys.executable, "-m", "poold", "serve"], env, log_dir / "daemon.log")
    _wait_healthy(pool, timeout_s)
    say(f"daemon up at {url} (SQLite in {workdir / 'daemon'})")
    # The agents share one harness state directory: `echo "<uuid> 79" >> fake/xid` injects
    # an XID into a running demo (with --keep), as on a real GPU.
    agent_env = {key: value for key, value in env.items() if not key.startswith("POOLD_")}
    agent_env["POOLD_FAKE_STATE"] = str(workdir / "fake")
    # The examples' jobs run as whoever runs the demo (a root demo's agents would otherwise
    # run them as nobody, who may not reach the demo's Python), held by their environment:
    # the demo ends jobs after their agents, and no agent would be left to remove their cgroups.
    agent_env.update(POOLD_AGENT_ALLOW_ROOT="true", POOLD_AGENT_DEFAULT_USER=pwd.getpwuid(os.geteuid()).pw_name,
                     POOLD_AGENT_ISOLATION="env")
    agent_env["POOLD_AGENT_JOIN_TOKEN"] = pool.tokens.join
    (workdir / "fake").mkdir(exist_ok=True)
    for node, fixture in SITE:
        metrics_port = free_port()
        pool.agent_metrics[node] = f"http://127.0.0.1:{metrics_port}/metrics"
        command = [
            sys.executable, "-m", "agents", "run", "--server", url, "--node", node, "--fake", fixture,
            "--state-dir", str(workdir / "agents" / node), "--metrics-listen", f"127.0.0.1:{metrics_port}",
        ]
        pool.processes[f"agent-{node}"] = _spawn(command, agent_env, log_dir / f"agent-{node}.log")
    _wait_nodes(pool, [node for node, _ in SITE], timeout_s)


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_healthy(pool: DemoPool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pool.processes["daemon"].poll() is not None:
            raise DemoError(f"the daemon exited; see {pool.workdir / 'logs' / 'daemon.log'}")
        try:
            if httpx.get(pool.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DemoError(f"the daemon did not answer within {timeout_s:.0f} s")


def _wait_nodes(pool: DemoPool, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with pool.client() as client:
        while time.monotonic() < deadline:
            for name, process in pool.processes.items():
                if process.poll() is not None:
                    raise DemoError(f"{name} exited; see {pool.workdir / 'logs' / (name + '.log')}")
            ready = {node["name"] for node in client.nodes() if node["state"] == "ready"}
            if set(names) <= ready:
                return
            time.sleep(0.3)
    raise DemoError(f"agents did not register within {timeout_s:.0f} s: {sorted(set(names) - ready)}")


def example_files() -> list[Path]:
    examples = shipped_path("config", "examples")
    files = sorted(examples.glob("*.toml"))
    if not files:
        raise DemoError(f"no example jobs in {examples}")
    return files


def run_jobs(pool: DemoPool, files: list[Path], timeout_s: float) -> tuple[list[dict], str]:
    """Submit the examples and the job that can never fit (refused: returns why); wait for
    the examples to end (as user ``demo``)."""
    with pool.client() as client:
        ids = [client.submit(parse_job_file(path).model_dump(mode="json"))["id"] for path in files]
        try:
            client.submit(parse_job_text(UNPLACEABLE_JOB, "too-big.toml").model_dump(mode="json"))
            raise DemoError("the daemon accepted a job that can never fit (scheduler.never_fits is not 'refuse')")
        except ClientError as refused:
            refusal = str(refused)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            jobs = [client.job(job_id) for job_id in ids]
            if all(job["state"] in TERMINAL for job in jobs):
                break
            time.sleep(0.5)
        jobs = [client.job(job_id) for job_id in ids]
        for job in jobs:
            job["log"] = client.log(job["id"]).decode(errors="replace")
    return jobs, refusal


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="poold-demo-"))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
