"""What a running agent costs a node: memory and CPU of idle agents, and memory of one job's shim.

Run: ``.venv/bin/python bench/bench_agent_memory.py [--window 10]``

Starts the demo pool (``poold.demo.start_pool``: the real daemon on SQLite and five agents
over fake devices, all real processes), submits one ``sleep`` job, lets everything settle,
then measures for ``--window`` seconds:

- each agent's RSS and USS (memory only it holds) and its CPU use while registered and idle
  (heartbeat every 2 s, assignment poll every 1 s, the demo's settings);
- the shim of the running job: RSS and USS. One shim runs per job, so this is the per-job
  overhead on a node.

Targets: an idle agent under 100 MiB RSS and 2 % of one core; a shim under 30 MiB RSS.
``bench/bench_inventory.py`` measures one inventory pass and a bare collector process.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poold.demo import start_pool  # noqa: E402
from poold.jobspec import parse_job_text  # noqa: E402

TARGET_AGENT_RSS_MIB = 100.0
TARGET_AGENT_CPU_PCT = 2.0
TARGET_SHIM_RSS_MIB = 30.0
SLEEP_JOB = """
name = "bench-sleep"
command = ["sleep", "600"]
[resources]
count = 1
kind = "gpu"
[[resources.accept]]
model = "L4"
"""


def mib(value: int) -> float:
    return value / 2**20


def verdict(value: float, target: float) -> str:
    return "ok" if value < target else f"ABOVE TARGET ({target:g})"


def wait_for_shim(workdir: Path, timeout_s: float = 30.0) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in (workdir / "agents").glob("*/jobs/*/shim.json"):
            return psutil.Process(json.loads(path.read_text())["pid"])
        time.sleep(0.1)
    raise SystemExit("the sleep job did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds of idle measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="poold-bench-") as tmp:
        workdir = Path(tmp)
        pool = start_pool(workdir, say=lambda line: None)
        try:
            with pool.client() as client:
                job = client.submit(parse_job_text(SLEEP_JOB).model_dump(mode="json"))
            shim = wait_for_shim(workdir)
            time.sleep(3)  # registration, first heartbeats, imports done
            agents = {name: psutil.Process(p.pid) for name, p in pool.processes.items() if name.startswith("agent-")}
            cpu_before = {name: sum(proc.cpu_times()[:2]) for name, proc in agents.items()}
            time.sleep(args.window)
            print(f"idle agents over {args.window:g} s (poll 1 s, heartbeat 2 s), one sleep job (#{job['id']}) running:")
            for name, proc in sorted(agents.items()):
                memory = proc.memory_full_info()
                cpu_pct = 100 * (sum(proc.cpu_times()[:2]) - cpu_before[name]) / args.window
                print(f"  {name:<14} RSS {mib(memory.rss):6.1f} MiB  USS {mib(memory.uss):6.1f} MiB  "
                      f"CPU {cpu_pct:4.1f} %   {verdict(mib(memory.rss), TARGET_AGENT_RSS_MIB)}, "
                      f"{verdict(cpu_pct, TARGET_AGENT_CPU_PCT)}")
            memory = shim.memory_full_info()
            print(f"shim of job {job['id']}: RSS {mib(memory.rss):6.1f} MiB  USS {mib(memory.uss):6.1f} MiB   "
                  f"{verdict(mib(memory.rss), TARGET_SHIM_RSS_MIB)}")
            with pool.client() as client:
                client.cancel(job["id"])
            deadline = time.monotonic() + 30
            while shim.is_running() and shim.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            pool.stop()


if __name__ == "__main__":
    main()
