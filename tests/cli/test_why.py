"""`poold why JOB` against a live daemon: a placed job's scores beside the runner-up, a waiting
job's place, filters, reservation and fallback, in a table and as JSON; an unknown job is one
clear error line."""

from __future__ import annotations

import json

import pytest

from tests.builders import make_node
from tests.cli.test_cli import poold, write
from tests.live import LiveDaemon, wait_for


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    live = LiveDaemon(tmp_path_factory.mktemp("daemon"), extra_env={"POOLD_NODES__TIMEOUT_S": "3600"})
    try:
        for builder in (make_node("l4").gpus(1, "L4"), make_node("a100").gpus(1, "A100")):
            body = {"node": builder.name, "host": builder.host.model_dump(mode="json"),
                    "devices": [d.model_dump(mode="json") for d in builder.devices]}
            live.http.post("/api/v1/agents/register", json=body).raise_for_status()
        yield live
    finally:
        live.stop()


def test_why_explains_a_placed_job_and_a_waiting_one(daemon, tmp_path):
    accept = '[[resources.accept]]\nmodel = "L4"\n[[resources.accept]]\nmodel = "A100"\n'
    placed = int(poold(daemon, "submit", write(tmp_path, f'name = "p"\ncommand = "true"\nmax_runtime = "2h"\n[resources]\n{accept}'),
                       check=0).stdout)
    wait_for(lambda: json.loads(poold(daemon, "-o", "json", "job", str(placed), check=0).stdout)["state"] == "assigned")
    table = poold(daemon, "why", str(placed), check=0).stdout
    assert "placed at" in table and "on l4" in table
    assert "chosen" in table and "runner-up" in table and "a100" in table and "SCORER" in table and "total" in table

    later = '[[resources.accept]]\nmodel = "L4"\n[[resources.accept]]\nmodel = "A100"\nafter = "1h"\n'
    waiting = int(poold(daemon, "submit", write(tmp_path, f'name = "w"\ncommand = "true"\n[resources]\n{later}', "w.toml"),
                        check=0).stdout)
    answer = wait_for(lambda: (a := json.loads(poold(daemon, "-o", "json", "why", str(waiting), check=0).stdout))["pending"]
                      and a["pending"]["reservation"] and a)
    assert answer["pending"]["place"] == {"position": 1, "ahead": 0, "pending": 1}
    assert answer["pending"]["reservation"]["nodes"] == ["l4"] and answer["pending"]["fallbacks"][0]["model"] == "a100"
    table = poold(daemon, "why", str(waiting), check=0).stdout
    assert "place in queue default: 1 of 1 pending (0 ahead)" in table
    assert "reserved: from" in table and "on l4" in table
    assert "falls back to a100 from" in table and "(not yet)" in table
    assert "filters now (nearest misses first)" in table and "would wait" in table


def test_why_of_an_unknown_job_is_one_error_line(daemon):
    result = poold(daemon, "why", "424242", check=1)
    assert "424242" in result.stderr and "Traceback" not in result.stderr
