"""Queues through the API, on both stores: admins create, change and delete them with every
value checked at the door (a 422 naming the field, the store unchanged); changed through the
API, a queue is no longer reseeded from the config file; everyone reads usage and waits."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from poold.db.models import EventModel, QueueModel
from poold.db.session import transaction
from poold.services.queues import sync_queues
from tests.api.calls import register
from tests.builders import make_node


def stored(pool) -> dict:
    with pool.factory() as session:
        return {q.name: (q.priority, q.weight, q.guarantees, q.limits, q.changed_by) for q in session.scalars(select(QueueModel))}


@pytest.mark.parametrize(("body", "field"), [
    ({"guarantee": {"H10": 1}}, "guarantee.H10"),  # no device model of the pool
    ({"guarantee": {"L4": -1}}, "guarantee.L4"),
    ({"limit": {"cost": -0.5}}, "limit.cost"),
    ({"guarantee": {"L4": 4}, "limit": {"l4": 2}}, "limit.l4"),
    ({"guarantee": {"L4": 1, "l4": 2}}, "guarantee.l4"),  # the same key twice
    ({"guarantee": {"bad key!": 1}}, "guarantee.bad key!"),
    ({"weight": 0}, "weight"),
    ({"weight": -2}, "weight"),
    ({"priority": 5000}, "priority"),
    ({"colour": "red"}, "colour"),
])
def test_bad_entitlements_are_refused_naming_the_field_and_change_nothing(api, pool, body, field):
    register(api, make_node("n1").gpus(2, "L4"))
    before = stored(pool)
    for response in (api.post("/api/v1/queues", json={"name": "batch", **body}), api.patch("/api/v1/queues/default", json=body)):
        assert response.status_code == 422, response.text
        assert field in [error["field"] for error in response.json()["errors"]], response.json()
    assert stored(pool) == before


def test_create_change_and_hand_back_to_the_config(api, pool, settings):
    register(api, make_node("n1").gpus(2, "L4"))
    made = api.post("/api/v1/queues", json={"name": "batch", "weight": 2, "guarantee": {"L4": 1, "GPU": 2}, "limit": {"Cost": 40}})
    assert made.status_code == 201, made.text
    assert (made.json()["guarantee"], made.json()["limit"], made.json()["in_config"]) == ({"L4": 1, "gpu": 2}, {"cost": 40}, False)
    assert api.post("/api/v1/queues", json={"name": "batch"}).status_code == 409

    changed = api.patch("/api/v1/queues/default", json={"guarantee": {"l4": 2, "gpu": 1}, "weight": 3}).json()
    assert changed["changed_by"] and changed["weight"] == 3
    changed = api.patch("/api/v1/queues/default", json={"guarantee": {"gpu": None}, "limit": {"L4": 2}}).json()
    assert (changed["guarantee"], changed["limit"]) == ({"l4": 2}, {"L4": 2})  # keys merged, null removes one
    assert api.patch("/api/v1/queues/default", json={"limit": {"L4": 1}}).status_code == 422  # below the kept guarantee

    with transaction(pool.factory) as session:  # a restart: the admin's change stays
        sync_queues(session, settings)
    assert stored(pool)["default"][1:3] == (3.0, {"l4": 2})
    back = api.patch("/api/v1/queues/default", json={"from_config": True})
    assert back.status_code == 200 and (back.json()["weight"], back.json()["changed_by"]) == (1.0, None)
    assert api.patch("/api/v1/queues/batch", json={"from_config": True}).status_code == 409  # not in the file
    assert api.patch("/api/v1/queues/default", json={"from_config": True, "weight": 2}).status_code == 422
    with pool.factory() as session:
        notes = session.scalars(select(EventModel.message).where(EventModel.kind == "queue.changed").order_by(EventModel.id)).all()
    assert len(notes) == 4 and notes[0].startswith("queue batch set by ") and "guarantee {'L4': 1.0, 'gpu': 2.0}" in notes[0]
    assert notes[-1].startswith("queue default handed back to the config file: priority 0, weight 1")


def test_delete_is_refused_while_jobs_refer_to_the_queue(api, pool):
    assert api.post("/api/v1/queues", json={"name": "batch"}).status_code == 201
    job = {"name": "t", "command": ["true"], "queue": "batch", "resources": {"kind": "cpu", "cpu_cores": 1}}
    assert api.post("/api/v1/jobs", json={"spec": job}).status_code == 201
    refused = api.delete("/api/v1/queues/batch")
    assert refused.status_code == 409 and "'batch'" in refused.json()["detail"]
    assert api.delete("/api/v1/queues/interactive").status_code == 409  # named by the config file
    assert api.post("/api/v1/queues", json={"name": "spare"}).status_code == 201
    assert api.delete("/api/v1/queues/spare").status_code == 204
    assert api.get("/api/v1/queues/spare").status_code == 404


def test_usage_shows_devices_cost_and_waits(api, pool):
    register(api, make_node("n1").gpus(1, "L4"))
    gpu = {"name": "t", "command": ["true"], "resources": {"count": 1}}
    placed = api.post("/api/v1/jobs", json={"spec": gpu}).json()
    waiting = api.post("/api/v1/jobs", json={"spec": gpu}).json()
    assert api.get(f"/api/v1/jobs/{placed['id']}").json()["state"] == "assigned"
    queues = {q["name"]: q for q in api.get("/api/v1/queues").json()}
    assert list(queues) == ["interactive", "default"]  # highest priority first
    default = queues["default"]
    assert (default["devices"], default["cost_per_hour"], default["placed"], default["pending"]) == ({"L4": 1.0}, 0.8, 1, 1)
    assert default["oldest_pending_at"] == waiting["submitted_at"] and default["oldest_wait_s"] >= 0
    assert (queues["interactive"]["devices"], queues["interactive"]["pending"], queues["interactive"]["oldest_wait_s"]) == ({}, 0, None)
