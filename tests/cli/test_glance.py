"""The pool at a glance on a live demo pool (a daemon and five agents on fake devices, jobs that
really run): `poold usage` adds up, `poold pool`, `poold top --once`, `poold nodes` counts,
`poold submit --wait`, and shell completion of job ids and node names."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime

import pytest

from poold import demo
from tests.live import wait_for


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    # The daemon takes its settings from the environment: a utilisation sample every second.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POOLD_ACCOUNTING__SAMPLE_S", "1")
        started = demo.start_pool(tmp_path_factory.mktemp("demo"), say=lambda text: None)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def env(pool):
    clean = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_") and not key.startswith("_POOLD")}
    return {**clean, "POOLD_URL": pool.url, "POOLD_TOKEN": pool.tokens.admin, "XDG_CONFIG_HOME": "/nonexistent"}


@pytest.fixture(scope="module")
def examples(pool):
    """The example jobs, run to their end."""
    jobs, _ = demo.run_jobs(pool, demo.example_files(), timeout_s=90)
    assert {job["state"] for job in jobs} == {"succeeded"}, [(job["name"], job["state"]) for job in jobs]
    return jobs


def poold(env, *args, check: int | None = 0, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "poold", *args], capture_output=True, text=True, timeout=120, env={**env, **(extra or {})})
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def hours(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 3600


def test_usage_by_job_adds_up_to_price_times_held_time(env, examples):
    rows = {row["job_id"]: row for row in json.loads(poold(env, "-o", "json", "usage", "--by", "job").stdout)["rows"]}
    for job in examples:
        row = rows[job["id"]]
        held = hours(job["placed_at"], job["ended_at"])
        assert row["held_hours"] == pytest.approx(held, abs=2e-6), job["name"]  # µs-rounded times
        assert row["cost"] == pytest.approx(job["price_per_hour"] * held, rel=1e-3, abs=1e-6), job["name"]
        units = sum(a["share"] for a in job["allocations"])  # a MIG slice is 1 slice here; its price says 1/7
        if units and not job["allocations"][0]["device_uuid"].startswith("MIG-"):
            assert sum(row["device_hours"].values()) == pytest.approx(units * held, rel=1e-3, abs=1e-6), job["name"]
        assert (row["queue"], row["owner"], row["state"]) == (job["queue"], job["owner"], "succeeded")
    table = poold(env, "usage", "--by", "job").stdout
    for job in examples:
        assert f"{rows[job['id']]['cost']:.2f}" in table and job["name"] in table


def test_usage_by_queue_is_the_sum_of_its_jobs_and_prints_as_csv(env, examples):
    jobs = json.loads(poold(env, "-o", "json", "usage", "--by", "job").stdout)["rows"]
    queues = json.loads(poold(env, "usage", "-o", "json").stdout)
    assert queues["by"] == "queue" and queues["since"] is None
    assert {row["key"] for row in queues["rows"]} == {job["queue"] for job in jobs}
    for row in queues["rows"]:
        mine = [job for job in jobs if job["queue"] == row["key"]]
        assert row["jobs"] == len(mine)
        assert row["cost"] == pytest.approx(sum(job["cost"] for job in mine), abs=1e-6)
        for model, device_hours in row["device_hours"].items():
            assert device_hours == pytest.approx(sum(job["device_hours"].get(model, 0.0) for job in mine), abs=1e-6)
    lines = list(csv.DictReader(io.StringIO(poold(env, "usage", "-o", "csv").stdout)))
    assert {line["key"]: float(line["cost"]) for line in lines} == {row["key"]: pytest.approx(row["cost"]) for row in queues["rows"]}
    assert "device_hours_H100" in lines[0]
    by_model = json.loads(poold(env, "usage", "--by", "model", "--since", "24h", "-o", "json").stdout)
    assert by_model["since"] is not None and {"H100", "L4"} <= {row["key"] for row in by_model["rows"]}
    assert sum(row["cost"] for row in by_model["rows"]) == pytest.approx(sum(job["cost"] for job in jobs), abs=1e-6)


def test_usage_refuses_a_bad_since_naming_the_option(env):
    result = poold(env, "usage", "--since", "yesterday", check=2)
    assert "--since" in result.stderr and "yesterday" in result.stderr and "Traceback" not in result.stderr
    assert "--idle" in poold(env, "usage", "--idle", "--by", "queue", check=2).stderr


def test_usage_idle_lists_running_jobs_below_the_threshold(env, pool, tmp_path):
    """The fake devices report no utilisation for a job that merely sleeps: 0% while held."""
    job_id = int(poold(env, "submit", write(tmp_path, SLEEPER)).stdout)
    try:
        wait_for(lambda: json.loads(poold(env, "-o", "json", "job", str(job_id)).stdout)["state"] == "running", timeout_s=30)
        idle = wait_for(lambda: (rows := json.loads(poold(env, "usage", "--idle", "-o", "json").stdout)["rows"]) and rows, timeout_s=40)
        assert [row["job_id"] for row in idle] == [job_id] and idle[0]["utilization_pct"] < 10
        assert json.loads(poold(env, "usage", "--idle", "--below", "0", "-o", "json").stdout)["rows"] == []
    finally:
        poold(env, "cancel", str(job_id))


SLEEPER = 'name = "sleeper"\ncommand = "sleep 120"\n[resources]\nkind = "gpu"\n[[resources.accept]]\nmodel = "L4"\n'


def write(tmp_path, text: str, name: str = "job.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)
