"""Chaos: several daemons on one PostgreSQL, agents that come and go, random SIGKILLs.

    .venv/bin/python bench/chaos.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        [--daemons 3] [--agents 4] [--minutes 3] [--seed 1] [--json]

Real processes throughout: ``--daemons`` ``poold serve`` replicas over one throwaway database
(made on the server of ``--db`` and dropped at the end), and ``--agents`` ``poold-agent run``
over fake devices (the harness's fixtures), each agent talking to one daemon. For
``--minutes``, a driver submits short jobs of mixed shapes to random daemons, cancels some,
and SIGKILLs a daemon or an agent every few seconds, restarting it after a pause; some
agents stay away past the node timeout, so their nodes are lost and their jobs retried.
Then everything is brought back and the pool is left to settle, and the invariants are
checked, in SQL and in the marks each job's command writes when it starts:

- ``lost``: a job the daemon acknowledged (201 with its id) that is not in the store, or that
  ended ``lost`` although retries were left and no retry was submitted;
- ``duplicated``: a job whose command started more than once (one job id, two start marks);
- ``over_capacity``: devices or nodes whose active allocations exceed them, sampled during
  the run and at the end (``poold.services.audit``);
- ``stuck``: acknowledged jobs whose chain of retries has not ended once the pool settled.

The last line of stdout is one JSON object (``--json``): kills, jobs, and the four counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench.store import throwaway_store, wait_answering  # noqa: E402
from poold.db.models import JobModel  # noqa: E402
from poold.demo import free_port, issue_tokens  # noqa: E402
from poold.db.session import make_sessionmaker  # noqa: E402
from poold.services import audit  # noqa: E402

FIXTURES = ["a100-4", "l4-2", "hgx-h100-mig", "ascend-910b-8"]
SHAPES = [
    {"count": 1, "kind": "gpu"},
    {"count": 1, "kind": "gpu", "share": 0.5},
    {"count": 2, "kind": "gpu"},
    {"count": 0, "cpu_cores": 1},
    {"count": 1, "kind": "npu"},
]
NODE_TIMEOUT_S = 6.0
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


@dataclass
class Proc:
    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    back_at: float | None = None  # when a killed one is started again

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.back_at = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # the process alone: an agent's jobs live on in their shims
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@dataclass
class Tally:
    kills: int = 0
    acknowledged: dict[int, int] = field(default_factory=dict)  # job id -> retries allowed
    cancels: int = 0
    over_capacity: set[str] = field(default_factory=set)


def _job(index: int, marks: Path, rng: random.Random) -> dict:
    seconds = rng.choice([0.5, 1, 2, 4])
    command = f'echo "$POOLD_JOB_ID $POOLD_NODE start" >> {marks}; sleep {seconds}'
    return {"name": f"chaos-{index}", "command": ["sh", "-c", command], "retries": 2, "resources": SHAPES[index % len(SHAPES)]}


def _submit(urls: list[str], spec: dict, rng: random.Random, token: str) -> int | None:
    """Submit to a random daemon, another on a connection error; the id if acknowledged."""
    for url in rng.sample(urls, len(urls)):
        try:
            response = httpx.post(url + "/api/v1/jobs", json={"spec": spec}, timeout=10, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            continue
        if response.status_code == 201:
            return int(response.json()["id"])
        if response.status_code < 500:
            raise SystemExit(f"submit refused: {response.status_code} {response.text}")
    return None


def _cancel(urls: list[str], job_id: int, rng: random.Random, token: str) -> bool:
    for url in rng.sample(urls, len(urls)):
        try:
            response = httpx.post(url + f"/api/v1/jobs/{job_id}/cancel", timeout=10, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            continue
        return response.status_code == 200
    return False


def run(db: str, daemons: int, agents: int, minutes: float, seed: int, workdir: Path) -> dict:
    rng = random.Random(seed)
    marks = workdir / "marks"
    marks.touch()
    (workdir / "logs").mkdir()
    with throwaway_store(db, "chaos") as (engine, backend):
        if backend != "postgresql":
            raise SystemExit("chaos needs PostgreSQL (--db): several daemons share one store")
        url = engine.url.render_as_string(hide_password=False)
        site = issue_tokens(make_sessionmaker(engine), agents)
        base = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_")}
        ports = [free_port() for _ in range(daemons)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        daemon_procs = [
            Proc(f"daemon-{i}", [sys.executable, "-m", "poold", "serve"], {
                **base, "POOLD_STATE_DIR": str(workdir / f"daemon-{i}"), "POOLD_DATABASE_URL": url,
                "POOLD_SERVER__PORT": str(port), "POOLD_SCHEDULER__INTERVAL_S": "0.5",
                "POOLD_NODES__TIMEOUT_S": str(NODE_TIMEOUT_S), "POOLD_NODES__HEARTBEAT_INTERVAL_S": "1", "POOLD_LOG_LEVEL": "WARNING",
            }, workdir / "logs" / f"daemon-{i}.log")
            for i, port in enumerate(ports)
        ]
        daemon_procs[0].start()
        wait_answering(urls[0])  # the first one migrates the schema; then the others
        for proc in daemon_procs[1:]:
            proc.start()
        for daemon_url in urls[1:]:
            wait_answering(daemon_url)
        agent_env = {**base, "POOLD_FAKE_STATE": str(workdir / "fake"), "POOLD_AGENT_JOIN_TOKEN": site.join}
        (workdir / "fake").mkdir()
        agent_procs = [
            Proc(f"agent-{k}", [sys.executable, "-c", "from agents.cli import main; main()", "run", "--server", urls[k % daemons],
                                "--node", f"chaos-{k}", "--fake", FIXTURES[k % len(FIXTURES)], "--state-dir", str(workdir / f"agent-{k}")],
                 agent_env, workdir / "logs" / f"agent-{k}.log")
            for k in range(agents)
        ]
        for proc in agent_procs:
            proc.start()
        time.sleep(3)

        tally, index = Tally(), 0
        factory = make_sessionmaker(engine)
        deadline = time.monotonic() + minutes * 60
        next_kill, next_audit = time.monotonic() + 3, time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                for proc in daemon_procs + agent_procs:  # bring back the ones whose pause is over
                    if not proc.alive and proc.back_at is not None and now >= proc.back_at:
                        proc.start()
                live = [u for u, p in zip(urls, daemon_procs) if p.alive] or urls
                roll = rng.random()
                if roll < 0.85:
                    job_id = _submit(live, _job(index, marks, rng), rng, site.user)
                    index += 1
                    if job_id is not None:
                        tally.acknowledged[job_id] = 2
                elif tally.acknowledged:
                    tally.cancels += _cancel(live, rng.choice(list(tally.acknowledged)), rng, site.user)
                if now >= next_kill:
                    victims = [p for p in daemon_procs if p.alive] if rng.random() < 0.5 else [p for p in agent_procs if p.alive]
                    if len([p for p in daemon_procs if p.alive]) <= 1:
                        victims = [p for p in agent_procs if p.alive]  # keep one daemon up
                    if victims:
                        victim = rng.choice(victims)
                        victim.kill()
                        tally.kills += 1
                        # agents sometimes stay away past the node timeout: their node is lost
                        away = rng.choice([1.0, 2.0, 3.0, NODE_TIMEOUT_S + 4]) if victim in agent_procs else rng.uniform(1, 4)
                        victim.back_at = now + away
                    next_kill = now + rng.uniform(3, 7)
                if now >= next_audit:
                    with factory() as session:
                        tally.over_capacity.update(audit.over_capacity(session))
                    next_audit = now + 10
                time.sleep(rng.uniform(0.05, 0.4))
            for proc in daemon_procs + agent_procs:  # everything back, then let the pool settle
                if not proc.alive:
                    proc.start()
            _settle(factory, tally, timeout_s=120)
            with factory() as session:
                tally.over_capacity.update(audit.over_capacity(session))
            return _verdict(factory, tally, marks, backend)
        finally:
            for proc in agent_procs + daemon_procs:
                proc.stop()
            _kill_jobs(marks)


def _chains(factory, ids: list[int]) -> dict[int, JobModel]:
    """Each acknowledged job's last retry (the job itself when it was never retried)."""
    rows, retried_as = _jobs(factory)
    last = {}
    for job_id in ids:
        job = rows.get(job_id)
        while job is not None and job.id in retried_as:
            job = retried_as[job.id]
        last[job_id] = job
    return last


def _jobs(factory) -> tuple[dict[int, JobModel], dict[int, JobModel]]:
    """Every job by id, and each retried job's retry."""
    with factory() as session:
        rows = {job.id: job for job in session.scalars(select(JobModel))}
    return rows, {job.retry_of: job for job in rows.values() if job.retry_of is not None}


def _settle(factory, tally: Tally, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chains = _chains(factory, list(tally.acknowledged))
        if all(job is not None and job.state in TERMINAL for job in chains.values()):
            return
        time.sleep(1)


def _verdict(factory, tally: Tally, marks: Path, backend: str) -> dict:
    chains = _chains(factory, list(tally.acknowledged))
    missing = [job_id for job_id, job in chains.items() if job is None]
    rows, retried_as = _jobs(factory)
    dropped = [  # lost with retries left, not cancelled, and never submitted again
        j.id for j in rows.values()
        if j.state == "lost" and j.id not in retried_as and j.attempt <= int(j.spec.get("retries", 1)) and "a cancel was requested" not in (j.reason or "")
    ]
    starts: dict[str, int] = {}
    for line in marks.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "start":
            starts[parts[0]] = starts.get(parts[0], 0) + 1
    stuck = [job_id for job_id, job in chains.items() if job is not None and job.state not in TERMINAL]
    states: dict[str, int] = {}
    for job in chains.values():
        if job is not None:
            states[job.state] = states.get(job.state, 0) + 1
    return {
        "kills": tally.kills,
        "jobs": len(tally.acknowledged),
        "lost": len(missing) + len(dropped),
        "duplicated": sum(1 for count in starts.values() if count > 1),
        "over_capacity": len(tally.over_capacity),
        "stuck": len(stuck),
        "db": backend,
        "retried": sum(1 for job in rows.values() if job.retry_of is not None),
        "cancelled_by_driver": tally.cancels,
        "final_states": states,
        "examples": {"over_capacity": sorted(tally.over_capacity)[:3], "stuck": stuck[:5], "lost": (missing + dropped)[:5]},
    }


def _kill_jobs(marks: Path) -> None:
    """Job processes outlive their agents by design (shims); end the ones this run started."""
    for line in subprocess.run(["pgrep", "-f", str(marks)], capture_output=True, text=True).stdout.split():
        try:
            os.kill(int(line), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", metavar="URL", required=True, help="a PostgreSQL server URL (a throwaway database is made there)")
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="poold-chaos-") as tmp:
        result = run(args.db, args.daemons, args.agents, args.minutes, args.seed, Path(tmp))
    print(f"chaos on {result['db']}: {args.daemons} daemons, {args.agents} agents, {args.minutes:g} min")
    for key in ("kills", "jobs", "retried", "cancelled_by_driver", "lost", "duplicated", "over_capacity", "stuck"):
        print(f"  {key:<22} {result[key]:>6}")
    print(f"  final states           {result['final_states']}")
    if any(result[key] for key in ("lost", "duplicated", "over_capacity", "stuck")):
        print(f"  examples               {result['examples']}")
    if args.json:
        summary = {key: result[key] for key in ("kills", "jobs", "lost", "duplicated", "over_capacity", "stuck")}
        print(json.dumps(summary))
    return 1 if any(result[key] for key in ("lost", "duplicated", "over_capacity", "stuck")) else 0


if __name__ == "__main__":
    raise SystemExit(main())
