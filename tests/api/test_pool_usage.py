"""``GET /api/v1/pool`` and ``GET /api/v1/usage`` on both stores: what a user reads, and
bad query values refused with a 422 naming the parameter."""

from __future__ import annotations

import pytest

from tests.api.calls import heartbeat, register, submit
from tests.auth import bearer
from tests.builders import make_node


def test_the_pool_by_model_and_the_accounts_of_a_placed_job(api):
    node = make_node("n1").gpus(2, "L4")
    register(api, node)
    job = submit(api, share=0.5)
    node.devices[0].utilization_pct = 40.0
    node.devices[1].utilization_pct = 40.0
    assert heartbeat(api, node).status_code == 200
    [l4] = api.get("/api/v1/pool").json()["models"]
    assert (l4["model"], l4["devices"], l4["free"], l4["allocated"], l4["mig"]) == ("L4", 2, 1, 0.5, {})
    assert l4["utilization_pct"] == 40.0
    assert l4["fragmentation"] is not None  # the pass ran on this daemon

    by_job = api.get("/api/v1/usage", params={"by": "job", "state": ["assigned", "running"]}).json()
    [row] = by_job["rows"]
    assert (row["job_id"], row["key"], row["queue"], row["price_per_hour"]) == (job, str(job), "default", 0.4)  # half of 0.8/h
    assert row["cost"] >= 0 and by_job["since"] is None
    [queue] = api.get("/api/v1/usage", params={"by": "queue", "since": "1h"}).json()["rows"]
    assert (queue["key"], queue["jobs"]) == ("default", 1)
    assert api.get("/api/v1/usage", params={"by": "job", "state": "succeeded"}).json()["rows"] == []
    # No samples yet: a job whose utilisation is unknown is not listed as idle.
    assert api.get("/api/v1/usage", params={"by": "job", "idle_below": 10}).json()["rows"] == []


@pytest.mark.parametrize(("params", "field"), [
    ({"by": "colour"}, "by"),
    ({"since": "last week"}, "since"),
    ({"idle_below": 150}, "idle_below"),
    ({"state": "sleeping"}, "state"),
])
def test_bad_usage_queries_name_the_parameter(api, params, field):
    response = api.get("/api/v1/usage", params=params)
    assert response.status_code == 422, response.text
    assert any(field in error["field"] for error in response.json()["errors"]), response.json()


def test_the_pool_and_usage_take_a_token(api):
    for path in ("/api/v1/pool", "/api/v1/usage"):
        assert api.get(path, headers=bearer("pld_nope")).status_code == 401
