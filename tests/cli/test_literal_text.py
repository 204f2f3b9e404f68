"""Text that users and agents supply prints as it is in every table and message: rich markup
(``[/]``, ``[bold]``) and emoji codes (``:ab:`` in a bus id, ``:thumbs_up:``) are not read.
The test plays the node's agent over HTTP."""

from __future__ import annotations

import pytest

from tests.builders import make_node
from tests.cli.test_cli import poold, write
from tests.live import LiveDaemon, wait_for

AT = "2026-11-21T12:00:00Z"
BUS_ID = "0000:ab:00.0"  # :ab: is rich's emoji code for the AB button
MODEL = ":thumbs_up:"
WORKDIR = "[bold]x[/bold]"
DRAIN_REASON = "[/] firmware"  # a closing tag with nothing open: rich raises MarkupError
EMOJI = ("\N{NEGATIVE SQUARED AB}", "\N{THUMBS UP SIGN}")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A daemon with one node, "lab", whose only device is an FPGA whose uuid is its bus id
    and whose model is an emoji code; a job there failed because its workdir did not exist,
    and the node is drained."""
    live = LiveDaemon(tmp_path_factory.mktemp("daemon"), extra_env={"POOLD_NODES__TIMEOUT_S": "3600"})  # no heartbeats come
    try:
        builder = make_node("lab").fpgas(1, model=MODEL)
        builder.devices[0] = builder.devices[0].model_copy(update={"uuid": BUS_ID, "bus_id": BUS_ID})
        body = {"node": "lab", "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices]}
        live.http.post("/api/v1/agents/register", json=body).raise_for_status()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def failed_job(daemon, tmp_path_factory) -> str:
    path = write(tmp_path_factory.mktemp("job"), f'name = "lit"\ncommand = "true"\nworkdir = "{WORKDIR}"\n'
                 f'[resources]\nkind = "fpga"\n[[resources.accept]]\nmodel = "{MODEL}"\n')
    job_id = poold(daemon, "submit", path, check=0).stdout.strip()
    wait_for(lambda: any(a["job_id"] == int(job_id) for a in daemon.http.get("/api/v1/agents/lab/assignments").json()["start"]))
    # What the agent's shim reports for a workdir that is not there.
    ended = {"job_id": int(job_id), "kind": "ended", "at": AT, "outcome": "failed", "message": f"workdir {WORKDIR} does not exist on this node"}
    daemon.http.post("/api/v1/agents/lab/events", json={"events": [ended]}).raise_for_status()
    poold(daemon, "drain", "lab", "--reason", DRAIN_REASON, check=0)
    return job_id


def printed(daemon, *args: str) -> str:
    result = poold(daemon, *args, check=0)
    assert result.stderr == ""
    assert not any(emoji in result.stdout for emoji in EMOJI), result.stdout
    return result.stdout


def test_nodes_prints_a_drain_reason_as_written(daemon, failed_job):
    assert DRAIN_REASON in printed(daemon, "nodes")


def test_devices_prints_bus_ids_and_models_as_written(daemon, failed_job):
    out = printed(daemon, "devices")
    assert BUS_ID in out and MODEL in out


def test_job_prints_its_workdir_failure_device_and_model_as_written(daemon, failed_job):
    out = printed(daemon, "job", failed_job)
    assert f"reason: cheapest per unit of work: 1x {MODEL} on lab" in out  # a line of its own
    assert f"failed: workdir {WORKDIR} does not exist on this node" in out  # the events table
    assert BUS_ID in out  # the devices table


def test_jobs_prints_the_model_as_written(daemon, failed_job):
    assert f"1x {MODEL}" in printed(daemon, "jobs")


def test_pool_usage_and_top_print_the_model_and_names_as_written(daemon, failed_job):
    assert MODEL in printed(daemon, "pool")
    assert "lit" in printed(daemon, "usage", "--by", "job")  # it ended at once: no device-hours, so no model here
    assert MODEL in printed(daemon, "top", "--once")
