"""The event log through the API, on both stores: newest first, as many as asked, narrowed to a
job, a node or a kind (or a kind's family); a bad filter is a 4xx naming its field."""

from __future__ import annotations

import pytest

from tests.api.calls import register, submit
from tests.auth import bearer
from tests.builders import make_node


def events(api, **params) -> list[dict]:
    response = api.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def history(api) -> dict:
    """Two nodes; a job placed on l4 (submitted, placed), one waiting for that L4; l4 drained, then a100."""
    register(api, make_node("l4").gpus(1, "L4"))
    register(api, make_node("a100").gpus(1, "A100"))
    placed = submit(api, accept=[{"model": "L4"}])
    waits = submit(api, accept=[{"model": "L4"}])  # its one L4 is held
    assert api.post("/api/v1/nodes/l4/drain", json={"reason": "fans"}).status_code == 200
    assert api.post("/api/v1/nodes/a100/drain", json={"reason": "bios"}).status_code == 200
    return {"placed": placed, "waits": waits}


def test_the_log_is_newest_first_and_as_long_as_asked(api, history):
    everything = events(api, limit=500)
    ids = [event["id"] for event in everything]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    kinds = [event["kind"] for event in everything]
    assert kinds[:2] == ["node.drained", "node.drained"] and [e["node"] for e in everything[:2]] == ["a100", "l4"]
    assert "bios" in everything[0]["message"] and isinstance(everything[0]["data"], dict)
    assert {"job.submitted", "job.placed", "node.registered"} <= set(kinds)
    assert events(api, limit=2) == everything[:2]
    assert len(events(api)) == min(50, len(everything))  # the default


def test_filters_narrow_the_log(api, history):
    placed = events(api, job=history["placed"])
    assert [e["kind"] for e in placed][-2:] == ["job.placed", "job.submitted"]
    assert {e["job_id"] for e in placed} == {history["placed"]}
    assert events(api, job=history["waits"])[-1]["kind"] == "job.submitted"
    on_l4 = events(api, node="l4")
    assert on_l4 and {e["node"] for e in on_l4} == {"l4"} and on_l4[0]["kind"] == "node.drained"
    assert [e["node"] for e in events(api, kind="node.drained")] == ["a100", "l4"]
    family = events(api, kind="node", limit=500)
    assert family and all(e["kind"].startswith("node.") for e in family)
    assert {e["kind"] for e in family} >= {"node.drained", "node.registered"}
    assert events(api, kind="nod") == []  # a family is a whole first word, not a prefix of one
    assert events(api, job=history["placed"], node="a100") == []  # filters combine
    assert events(api, job=10**9) == []


def test_a_user_may_read_the_log_and_nobody_without_a_token(api, history):
    as_user = api.get("/api/v1/events", headers=bearer(api.auth.site.user))
    assert as_user.status_code == 200 and as_user.json()
    refused = api.get("/api/v1/events", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "limit"),
    ({"limit": 501}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"job": 0}, "job"),
    ({"job": "seven"}, "job"),
    ({"node": "no such/node"}, "node"),
    ({"kind": "Job Waiting"}, "kind"),
    ({"kind": "job."}, "kind"),
    ({"kind": ""}, "kind"),
])
def test_a_bad_filter_is_refused_naming_its_field(api, params, field):
    response = api.get("/api/v1/events", params=params)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


def test_a_node_the_pool_does_not_know_is_404_naming_it(api, history):
    response = api.get("/api/v1/events", params={"node": "ghost"})
    assert response.status_code == 404
    assert "ghost" in response.json()["detail"] and [e["field"] for e in response.json()["errors"]] == ["node"]


def test_a_jobs_own_events_carry_their_ids(api, history):
    detail = api.get(f"/api/v1/jobs/{history['placed']}").json()
    mine = [e for e in events(api, limit=500) if e["job_id"] == history["placed"]]
    assert detail["events"] == list(reversed(mine))  # the job's view is oldest first, the log's newest first
