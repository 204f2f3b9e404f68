"""`poold queues`, `poold queue ...` and the REASON column of `poold jobs`, against a live daemon."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from poold.cli.output import reason_text
from poold.cli.queues import _amounts, wait_text
from tests.builders import make_node
from tests.cli.test_cli import poold, write
from tests.live import LiveDaemon, wait_for


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    live = LiveDaemon(tmp_path_factory.mktemp("daemon"), extra_env={"POOLD_NODES__TIMEOUT_S": "3600"})
    try:
        builder = make_node("l4").gpus(1, "L4")
        body = {"node": builder.name, "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices]}
        live.http.post("/api/v1/agents/register", json=body).raise_for_status()
        yield live
    finally:
        live.stop()


@pytest.mark.parametrize(("reason", "shown"), [
    ("preempted for job 12; queue prod is below its guarantee of H100 = 16; waiting for the scheduler", "preempted for job 12"),
    ("no placement fits: device_busy x2 (e.g. GPU-53b11d61 is in use (1.00 held))", "no placement fits: device_busy x2"),
    ("x" * 60, "x" * 39 + "…"),
    (None, None),
])
def test_the_reason_column_shows_the_first_clause_cut_to_fit(reason, shown):
    assert reason_text(reason) == shown


def test_amounts_and_waits_as_the_commands_read_and_write_them():
    assert _amounts("--guarantee", ("H100=16", "cost=40.5", "A100=")) == {"H100": 16.0, "cost": 40.5, "A100": None}
    assert _amounts("--guarantee", ()) is None
    assert (wait_text(5), wait_text(125), wait_text(3 * 3600 + 60)) == ("5s", "2m05s", "3h01m")


def test_admins_manage_queues_and_everyone_sees_usage(daemon, tmp_path):
    made = poold(daemon, "queue", "create", "batch", "--weight", "2", "--guarantee", "L4=1", "--limit", "cost=40", check=0).stdout
    assert "guarantee:   L4=1" in made and "limit:       cost=40" in made and "weight:      2" in made
    refused = poold(daemon, "queue", "set", "batch", "--guarantee", "L4=5", "--limit", "L4=2", check=1)
    assert "limit.L4 = 2 is below guarantee.L4 = 5" in refused.stderr and "Traceback" not in refused.stderr
    assert "--guarantee" in poold(daemon, "queue", "set", "batch", "--guarantee", "L4", check=2).stderr
    assert "H10" in poold(daemon, "queue", "set", "batch", "--guarantee", "H10=1", check=1).stderr

    user = {**daemon.cli_env, "POOLD_TOKEN": daemon.tokens.user}
    as_user = subprocess.run([sys.executable, "-m", "poold", "queue", "set", "batch", "--weight", "9"], capture_output=True, text=True,
                             env=user, timeout=60)
    assert as_user.returncode == 1 and "admin" in as_user.stderr

    job_id = int(poold(daemon, "submit", write(tmp_path, 'name = "b"\ncommand = "true"\nqueue = "batch"\n[resources]\ncount = 1\n'),
                       check=0).stdout)
    wait_for(lambda: json.loads(poold(daemon, "-o", "json", "job", str(job_id), check=0).stdout)["state"] == "assigned")
    poold(daemon, "submit", write(tmp_path, 'name = "w"\ncommand = "true"\nqueue = "batch"\n[resources]\ncount = 1\n', "w.toml"), check=0)
    [batch] = [q for q in json.loads(poold(daemon, "-o", "json", "queues", check=0).stdout) if q["name"] == "batch"]
    assert (batch["devices"], batch["cost_per_hour"], batch["placed"], batch["pending"]) == ({"L4": 1.0}, 0.8, 1, 1)
    table = poold(daemon, "queues", check=0).stdout
    assert "batch" in table and "L4=1" in table and "cost=40" in table and "0.80" in table
    assert "REASON" in poold(daemon, "jobs", check=0).stdout
    listed = poold(daemon, "queue", "list", check=0).stdout
    assert "config" in listed and "admin" in listed  # default from the file; batch set by the admin

    refused = poold(daemon, "queue", "delete", "batch", check=1)
    assert "'batch'" in refused.stderr and "job(s)" in refused.stderr
