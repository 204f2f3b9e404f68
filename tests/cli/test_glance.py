"""`poold usage`, `poold pool`, `poold top --once` and `poold nodes` on a live demo pool
(tests/cli/conftest.py): the accounts add up, the counts are the site's."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from poold import demo
from tests.cli.demo_pool import SLEEPER, poold, write
from tests.live import wait_for


def row(table: str, first: str) -> list[str]:
    """The cells of the table's row whose first cell is ``first``."""
    return next(cells for line in table.splitlines() if (cells := [cell.strip() for cell in line.split("│")])[0] == first)


@pytest.fixture(scope="module")
def examples(demo_pool):
    """The example jobs, run to their end."""
    jobs, _ = demo.run_jobs(demo_pool, demo.example_files(), timeout_s=90)
    assert {job["state"] for job in jobs} == {"succeeded"}, [(job["name"], job["state"]) for job in jobs]
    return jobs


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


@pytest.fixture(scope="module")
def sleeper(env, tmp_path_factory):
    """A job holding one of the two L4s, running (after the accounts above were checked: its cost grows)."""
    job_id = int(poold(env, "submit", write(tmp_path_factory.mktemp("sleeper"), SLEEPER)).stdout)
    wait_for(lambda: json.loads(poold(env, "-o", "json", "job", str(job_id)).stdout)["state"] == "running", timeout_s=30)
    yield job_id
    poold(env, "cancel", str(job_id))


def test_usage_idle_lists_running_jobs_below_the_threshold(env, sleeper):
    """The fake L4s report 0% utilisation: the sleeper holds one idle."""
    idle = wait_for(lambda: (rows := json.loads(poold(env, "usage", "--idle", "-o", "json").stdout)["rows"]) and rows, timeout_s=40)
    assert [row["job_id"] for row in idle] == [sleeper] and idle[0]["utilization_pct"] < 10
    assert json.loads(poold(env, "usage", "--idle", "--below", "0", "-o", "json").stdout)["rows"] == []
    assert "sleeper" in poold(env, "usage", "--idle").stdout


def test_pool_by_model(env, sleeper):
    models = {m["model"]: m for m in json.loads(poold(env, "-o", "json", "pool").stdout)["models"]}
    # the site: 8 H100 (GPU 0 in MIG mode: 2g.20gb, 2x 1g.10gb, 3g.40gb), 4 A100, 2 L4, 8 910B, 2 U250
    assert {name: m["devices"] for name, m in models.items()} == {"H100": 8, "A100": 4, "L4": 2, "910B": 8, "U250": 2}
    assert models["H100"]["mig"] == {"1g.10gb": {"total": 2, "free": 2}, "2g.20gb": {"total": 1, "free": 1}, "3g.40gb": {"total": 1, "free": 1}}
    assert (models["L4"]["free"], models["L4"]["allocated"], models["L4"]["price_per_hour"]) == (1, 1.0, 0.8)
    table = poold(env, "pool").stdout
    # MODEL KIND DEVICES IN SERVICE FREE ALLOCATED MEMORY HELD MIG SLICES FREE FRAG UTIL PRICE/H
    l4 = row(table, "L4")
    assert l4[1:6] == ["gpu", "2", "2", "1", "1"] and l4[-1] == "0.80"
    assert row(table, "H100")[7] == "1g.10gb 2/2, 2g.20gb 1/1, 3g.40gb 1/1"


def test_nodes_count_whole_devices_and_mig_slices_apart(env, sleeper):
    nodes = {n["name"]: n for n in json.loads(poold(env, "-o", "json", "nodes").stdout)}
    assert (nodes["hgx-h100"]["devices"], nodes["hgx-h100"]["slices"]) == (8, 4)  # once "11"
    assert (nodes["l4"]["devices_free"], nodes["l4"]["devices"], nodes["l4"]["slices"]) == (1, 2, 0)
    table = poold(env, "nodes").stdout
    assert "MIG SLICES" in table
    assert row(table, "hgx-h100")[2:4] == ["8/8", "4/4"]


def test_top_once_shows_the_pool_queues_pending_and_running(env, sleeper, tmp_path):
    pair = SLEEPER.replace('"sleeper"', '"pair"').replace('kind = "gpu"', 'kind = "gpu"\ncount = 2')
    waiting = poold(env, "submit", write(tmp_path, pair)).stdout.strip()
    try:
        wait_for(lambda: json.loads(poold(env, "-o", "json", "job", waiting).stdout)["reason"], timeout_s=20)
        out = poold(env, "top", "--once").stdout
        pending = out[out.index("pending: 1"):out.index("running: 1")]
        assert waiting in pending and "pair" in pending and "no placement fits" in pending
        running = out[out.index("running: 1"):]
        assert str(sleeper) in running and "sleeper" in running and "0.80" in running
        assert "pool at" in out and "queues" in out
        jobs = poold(env, "jobs", "--state", "pending").stdout
        assert row(jobs, waiting)[-1] == "no placement fits: too_few_devices x1"  # the REASON column, its first clause
        view = json.loads(poold(env, "-o", "json", "top", "--once").stdout)
        assert [job["id"] for job in view["pending"]] == [int(waiting)]
        assert [row["job_id"] for row in view["running"]["rows"]] == [sleeper]
    finally:
        poold(env, "cancel", waiting)


def test_top_refreshes_until_ctrl_c_and_exits_0(env, tmp_path):
    # FORCE_COLOR: rich draws as on a terminal, each refresh over the last (else only the last frame is printed).
    # Its frames go to files, not pipes: 20 colour frames fill a pipe nobody reads yet, and top would block writing.
    with open(tmp_path / "out", "w") as stdout, open(tmp_path / "err", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "poold", "top", "--interval", "0.2"], stdout=stdout, stderr=stderr,
                                   text=True, env={**env, "FORCE_COLOR": "1"})
        try:
            time.sleep(4)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert process.returncode == 0, err
    assert out.count("pool at") >= 3 and "Traceback" not in err  # refreshed: the first frame and some more
