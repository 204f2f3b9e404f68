"""`poold demo` runs the example jobs to their end within a minute and leaves nothing running."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil


def leftovers() -> list[str]:
    """The demo's agents and job shims still running: processes of this interpreter (a demo
    that another checkout runs on the same machine is not this test's) with a demo
    directory on their command line."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if argv and argv[0] == sys.executable and "poold-demo-" in " ".join(argv):
            found.append(" ".join(argv))
    return found


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poold", "-o", "json", "demo", *args], capture_output=True, text=True, timeout=90)


def test_demo_runs_every_example_and_cleans_up():
    started = time.monotonic()
    result = run_demo()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    report = json.loads(result.stdout)
    assert len(report["jobs"]) >= 8
    assert {job["state"] for job in report["jobs"]} == {"succeeded"}
    refused = report["refused"]["error"]
    assert "spec.resources.count" in refused and "too_few_devices" in refused and "4 suitable A100" in refused
    seen = {job["name"]: job["log"] for job in report["jobs"]}
    mig = next(job for job in report["jobs"] if job["allocations"] and job["allocations"][0]["device_uuid"].startswith("MIG-"))
    cpu = next(job for job in report["jobs"] if job["name"] == "tokenize-corpus")
    assert cpu["allocations"] == [] and "GPUs visible: []" in cpu["log"]
    assert mig["allocations"][0]["device_uuid"] in seen[mig["name"]]
    assert leftovers() == []


def test_demo_that_times_out_still_leaves_nothing_running():
    result = run_demo("--timeout", "0.3")
    assert result.returncode == 1  # the jobs had not ended
    time.sleep(0.5)
    assert leftovers() == []
