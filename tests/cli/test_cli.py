"""The poold command against a live daemon: tables, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poold.cli.nodes import quarantine_text
from tests.builders import make_node
from tests.live import LiveDaemon, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    # The test plays the agents and sends no heartbeats: the nodes must not be lost while the
    # module runs (each `poold` command is a process of its own, slow on a busy machine).
    live = LiveDaemon(tmp_path_factory.mktemp("daemon"), extra_env={"POOLD_NODES__TIMEOUT_S": "3600"})
    try:
        for builder in (make_node("a100").gpus(4, "A100", nvlink=12), make_node("l4").gpus(2, "L4")):
            body = {"node": builder.name, "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices]}
            live.http.post("/api/v1/agents/register", json=body).raise_for_status()
        yield live
    finally:
        live.stop()


def poold(daemon, *args, check=None):
    result = subprocess.run([sys.executable, "-m", "poold", "--url", daemon.url, *args], capture_output=True, text=True, timeout=60,
                            env=daemon.cli_env)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def write(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_submit_prints_id_and_job_shows_placement(daemon, tmp_path):
    path = write(tmp_path, 'name = "infer"\ncommand = "true"\n[resources]\nmemory_per_device = "16GiB"\n'
                 '[[resources.accept]]\nmodel = "L4"\n[[resources.accept]]\nmodel = "A100"\nspeed = 2.0\n')
    job_id = int(poold(daemon, "submit", path, check=0).stdout.strip())
    job = wait_for(lambda: (j := json.loads(poold(daemon, "-o", "json", "job", str(job_id), check=0).stdout))["state"] == "assigned" and j)
    assert job["node"] == "l4"  # L4 0.80/1 = 0.80 per unit vs A100 2.20/2 = 1.10
    table = poold(daemon, "job", str(job_id), check=0).stdout
    assert "cheapest per unit of work" in table and "l4" in table
    assert str(job_id) in poold(daemon, "jobs", check=0).stdout
    poold(daemon, "cancel", str(job_id), check=0)


def test_job_that_can_never_fit_is_refused_at_submit_naming_the_key(daemon, tmp_path):
    path = write(tmp_path, 'name = "big"\ncommand = "true"\n[resources]\ncount = 8\n')
    result = poold(daemon, "submit", path, check=1)
    # the largest node has 4 GPUs: no node could hold 8 even with every device idle
    assert "spec.resources.count" in result.stderr and "too_few_devices" in result.stderr
    assert "4 suitable A100" in result.stderr
    assert "Traceback" not in result.stderr
    assert "big" not in poold(daemon, "jobs", check=0).stdout


def test_job_that_does_not_fit_now_waits_and_says_why(daemon, tmp_path):
    path = write(tmp_path, 'name = "pair"\ncommand = "true"\n[resources]\ncount = 2\n[[resources.accept]]\nmodel = "L4"\n')
    first = int(poold(daemon, "submit", path, check=0).stdout.strip())
    second = poold(daemon, "submit", path, check=0).stdout.strip()
    out = wait_for(lambda: "device_busy" in (text := poold(daemon, "job", second, check=0).stdout) and text)
    assert "why it waits" in out and "pending" in out and "too_few_devices" in out
    poold(daemon, "cancel", second, check=0)
    # No agent runs here: play the l4 agent, so that the first job ends and frees the L4s.
    at = "2026-11-21T12:00:00Z"
    ended = {"job_id": first, "kind": "ended", "at": at, "exit_code": 0, "outcome": "succeeded"}
    daemon.http.post("/api/v1/agents/l4/events", json={"events": [ended]}).raise_for_status()


def test_plan_shows_choice_runner_up_and_filters_without_submitting(daemon, tmp_path):
    path = write(tmp_path, 'name = "infer"\ncommand = "true"\n[resources]\nmemory_per_device = "16GiB"\n'
                 '[[resources.accept]]\nmodel = "L4"\n[[resources.accept]]\nmodel = "A100"\nspeed = 2.0\n')
    before = poold(daemon, "-o", "json", "jobs", check=0).stdout
    result = json.loads(poold(daemon, "-o", "json", "plan", path, check=0).stdout)
    assert result["placeable"] and result["never_fits"] is None
    # L4 0.80/1 = 0.80 per unit of work; the runner-up A100 2.20/2 = 1.10
    assert (result["chosen"]["node"], result["chosen"]["cost_per_work"]) == ("l4", 0.8)
    assert (result["runner_up"]["model"], result["runner_up"]["cost_per_work"]) == ("A100", 1.1)
    assert poold(daemon, "-o", "json", "jobs", check=0).stdout == before  # nothing submitted
    table = poold(daemon, "plan", path, check=0).stdout
    assert "would be placed" in table and "runner-up" in table
    big = write(tmp_path, 'name = "big"\ncommand = "true"\n[resources]\ncount = 8\n')
    never = poold(daemon, "plan", big, check=3).stdout
    assert "never fits" in never and "too_few_devices" in never and "candidates" in never


def test_bad_job_file_is_one_line_per_problem_with_line_numbers(daemon, tmp_path):
    path = write(tmp_path, 'name = "x"\ncommand = "true"\n[resources]\ncount = "two"\ncolour = "red"\n')
    result = poold(daemon, "submit", path, check=1)
    assert "line 4: resources.count" in result.stderr
    assert "line 5: resources.colour: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_errors_are_one_line_never_a_traceback(daemon, tmp_path):
    missing = poold(daemon, "job", "4242", check=1)
    assert missing.stderr.strip() == "error: job_id: no job 4242"  # a 404 names the field it is about
    nofile = poold(daemon, "submit", str(tmp_path / "nope.toml"), check=1)
    assert "cannot read" in nofile.stderr and "Traceback" not in nofile.stderr
    unreachable = subprocess.run([sys.executable, "-m", "poold", "--url", "http://127.0.0.1:9", "nodes"], capture_output=True, text=True)
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("error: cannot reach poold")
    usage = poold(daemon, "job", "abc", check=2)
    assert "not a valid integer" in usage.stderr


def test_nodes_devices_drain_json_and_tables(daemon):
    nodes = json.loads(poold(daemon, "-o", "json", "nodes", check=0).stdout)
    assert {n["name"] for n in nodes} == {"a100", "l4"}
    devices = json.loads(poold(daemon, "-o", "json", "devices", "--node", "l4", check=0).stdout)
    assert [d["model"] for d in devices] == ["L4", "L4"] and devices[0]["price_per_hour"] == 0.8
    assert "drained" in poold(daemon, "drain", "a100", "--reason", "firmware", check=0).stdout
    assert "firmware" in poold(daemon, "nodes", check=0).stdout
    poold(daemon, "undrain", "a100", check=0)
    assert poold(daemon, "drain", "nope", check=1).stderr.strip() == "error: no node named 'nope'"


def test_submit_wait_exits_with_outcome(daemon, tmp_path):
    """No agent runs here: the test plays the agent over HTTP and reports exit code 3."""
    path = write(tmp_path, 'name = "w"\ncommand = "false"\n[resources]\nkind = "gpu"\n[[resources.accept]]\nmodel = "A100"\n')
    process = subprocess.Popen([sys.executable, "-m", "poold", "--url", daemon.url, "submit", "--wait", "--poll", "0.1", path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.cli_env)
    job_id = int(process.stdout.readline())
    wait_for(lambda: any(a["job_id"] == job_id for a in daemon.http.get("/api/v1/agents/a100/assignments").json()["start"]))
    at = "2026-11-21T12:00:00Z"
    events = [{"job_id": job_id, "kind": "started", "at": at}, {"job_id": job_id, "kind": "ended", "at": at, "exit_code": 3, "outcome": "failed"}]
    daemon.http.post("/api/v1/agents/a100/events", json={"events": events}).raise_for_status()
    assert process.wait(timeout=30) == 3
    assert "failed" in process.stderr.read()


def test_cancel_force_ends_a_placed_job_at_once(daemon, tmp_path):
    """No agent runs here, so a plain cancel would wait for ever; --force does not wait."""
    path = write(tmp_path, 'name = "stuck"\ncommand = "true"\n[resources]\n[[resources.accept]]\nmodel = "A100"\n')
    job_id = poold(daemon, "submit", path, check=0).stdout.strip()
    wait_for(lambda: json.loads(poold(daemon, "-o", "json", "job", job_id, check=0).stdout)["state"] == "assigned")
    out = poold(daemon, "cancel", "--force", job_id, check=0).stdout.strip()
    assert out == f"job {job_id} cancelled by force: cancelled by force while assigned on node a100; its devices are released"
    assert json.loads(poold(daemon, "-o", "json", "job", job_id, check=0).stdout)["state"] == "cancelled"
    assert poold(daemon, "cancel", "--force", job_id, check=1).stderr.strip() == f"error: job {job_id} already ended (cancelled)"


def test_devices_show_a_quarantine_and_return_ends_it(daemon):
    """The l4 agent (played here) reports its second GPU unhealthy three times within the hour."""
    builder = make_node("l4").gpus(2, "L4")
    devices = json.loads(poold(daemon, "-o", "json", "devices", "--node", "l4", check=0).stdout)
    gpu = devices[1]["uuid"]
    records = [{key: d[key] for key in ("uuid", "vendor", "kind", "model", "name", "index", "memory_total_mib")} for d in devices]
    for health in ("unhealthy", "ok") * 3:
        records[1].update(health=health, health_reason="XID 79: GPU has fallen off the bus" if health != "ok" else None)
        body = {"host": builder.host.model_dump(mode="json"), "devices": records}
        daemon.http.post("/api/v1/agents/l4/heartbeat", json=body).raise_for_status()
    [held] = [d for d in json.loads(poold(daemon, "-o", "json", "devices", "--node", "l4", check=0).stdout) if d["uuid"] == gpu]
    assert held["health"] == "ok" and held["quarantine"]["held"] and held["quarantine"]["until"] is None
    assert quarantine_text(held["quarantine"]).endswith(
        " until returned by an admin: flapping: unhealthy 3 times within 3600 s (last: XID 79: GPU has fallen off the bus)")
    table = poold(daemon, "devices", "--node", "l4", check=0).stdout
    assert "QUARANTINE" in table and "flapping" in table
    assert poold(daemon, "devices", "return", gpu, check=0).stdout.strip() == f"device {gpu} on l4 is back in service"
    [after] = [d for d in json.loads(poold(daemon, "-o", "json", "devices", "--node", "l4", check=0).stdout) if d["uuid"] == gpu]
    assert after["quarantine"] is None
    assert poold(daemon, "devices", "return", gpu, check=1).stderr.strip() == f"error: device {gpu} is not quarantined"


def test_help_texts(daemon):
    text = poold(daemon, "--help", check=0).stdout
    for command in ("submit", "jobs", "job", "cancel", "logs", "nodes", "devices", "drain", "undrain", "token", "tls", "db", "serve", "demo"):
        assert command in text
    assert "POOLD_TOKEN" in text and "client.toml" in text
    assert "--local" in poold(daemon, "token", "create", "--help", check=0).stdout
    assert "--host" in poold(daemon, "tls", "init", "--help", check=0).stdout
    assert "--wait" in poold(daemon, "submit", "--help", check=0).stdout
    assert "--force" in poold(daemon, "cancel", "--help", check=0).stdout


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("nonsense", "the database URL does not parse"),
        ("postgresql://poold:secret@127.0.0.1:1/poold", "cannot open the store postgresql+psycopg://poold:***@127.0.0.1:1/poold"),
        ("mysql://poold:secret@db/poold", "cannot open the store mysql://poold:***@db/poold: No module named"),
    ],
)
def test_serve_with_a_bad_database_url_says_so_in_one_line(tmp_path, url, words):
    env = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_")}
    env |= {"POOLD_DATABASE_URL": url, "POOLD_STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "poold", "serve"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and words in result.stderr, result.stderr
    assert "secret" not in result.stderr


def test_serve_refuses_plain_http_beyond_loopback_naming_the_settings(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("POOLD_")}
    env |= {"POOLD_SERVER__BIND": "0.0.0.0", "POOLD_STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "poold", "serve"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "server.bind = '0.0.0.0' is not a loopback address" in result.stderr and "server.allow_plain_http = true" in result.stderr


def test_tokens_are_made_listed_and_revoked_through_the_api_or_on_the_store(daemon):
    made = json.loads(poold(daemon, "-o", "json", "token", "create", "--role", "user", "--user", "carol", "--expires", "2h", check=0).stdout)
    carol = daemon.cli_env | {"POOLD_TOKEN": made["token"]}
    as_carol = lambda *args: subprocess.run([sys.executable, "-m", "poold", *args], capture_output=True, text=True, env=carol, timeout=60)  # noqa: E731
    assert as_carol("jobs").returncode == 0
    refused = as_carol("drain", "l4")
    assert refused.returncode == 1 and refused.stderr.strip() == "error: user carol may not do this: it takes an admin token"
    listed = poold(daemon, "token", "list", check=0).stdout
    assert made["id"] in listed and "carol" in listed
    assert poold(daemon, "token", "revoke", made["id"], check=0).stdout.strip() == f"token {made['id']} (user carol) revoked"
    gone = as_carol("jobs")
    assert gone.returncode == 1 and f"token {made['id']} was revoked at" in gone.stderr and "POOLD_TOKEN" in gone.stderr
    # On the daemon's host, on the store itself: how the first admin token is made.
    store = daemon.cli_env | {"POOLD_DATABASE_URL": f"sqlite:///{daemon.state_dir / 'poold.db'}"}
    local = subprocess.run([sys.executable, "-m", "poold", "token", "create", "--local", "--role", "admin", "--user", "root"],
                           capture_output=True, text=True, env=store, timeout=60)
    assert local.returncode == 0 and local.stdout.startswith("pld_") and local.stdout.count("\n") == 1, local.stderr
    assert "(admin root), valid until" in local.stderr and "shown this once" in local.stderr
    root = daemon.cli_env | {"POOLD_TOKEN": local.stdout.strip()}
    listed = subprocess.run([sys.executable, "-m", "poold", "-o", "json", "token", "list"], capture_output=True, text=True, env=root, timeout=60)
    assert any(t["created_by"].endswith("(poold token create --local)") and t["user"] == "root" for t in json.loads(listed.stdout))
    join = poold(daemon, "token", "create", "--role", "join", "--uses", "3", check=0)
    assert "(join, 3 use(s))" in join.stderr
    assert "--expires: not a duration: 'soon'" in poold(daemon, "token", "create", "--role", "user", "--user", "x", "--expires", "soon", check=2).stderr
