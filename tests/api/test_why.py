"""`GET /api/v1/jobs/{id}/why` on both stores: a pending job's place in its queue, its queue's
usage, what each filter turns down now (nearest misses first), the reservation the last pass
made for it and when its fallback models open; a placed job's recorded scores beside the
runner-up; a preempted job's taker, reason and count; a 404 naming job_id."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from poold.db.models import EventModel, JobModel
from poold.db.session import transaction
from poold.services import preemption
from tests.api.calls import register, report
from tests.builders import make_node


def submit(api, *, queue="default", priority=0, max_runtime=None, **resources):
    spec = {"name": "train", "command": ["true"], "queue": queue, "priority": priority, "resources": resources}
    if max_runtime is not None:
        spec["max_runtime"] = max_runtime
    response = api.post("/api/v1/jobs", json={"spec": spec})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def why(api, job_id):
    response = api.get(f"/api/v1/jobs/{job_id}/why")
    assert response.status_code == 200, response.text
    return response.json()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_pending_job_shows_its_reservation_fallback_queue_and_nearest_misses(api, pool):
    l4 = make_node("n1").gpus(1, "L4")
    register(api, l4)
    register(api, make_node("n2").gpus(1, "A100"))
    running = submit(api, count=1, accept=[{"model": "L4"}], max_runtime=7200)
    waiting = submit(api, count=1, accept=[{"model": "L4"}, {"model": "A100", "after": 3600}])
    assert api.get(f"/api/v1/jobs/{running}").json()["state"] == "assigned"

    answer = why(api, waiting)
    assert (answer["state"], answer["placement"], answer["preemption"]) == ("pending", None, None)
    pending = answer["pending"]
    assert pending["place"] == {"position": 1, "ahead": 0, "pending": 1}
    assert (pending["queue"]["name"], pending["queue"]["devices"], pending["queue"]["cost_per_hour"]) == ("default", {"L4": 1.0}, 0.8)
    assert pending["under_guarantee"] == []

    placed_at = at(api.get(f"/api/v1/jobs/{running}").json()["placed_at"])
    reservation = pending["reservation"]
    assert abs((at(reservation["start_at"]) - (placed_at + timedelta(seconds=7200))).total_seconds()) < 1
    assert (reservation["nodes"], reservation["devices"], pending["reservation_note"]) == (["n1"], [l4.devices[0].uuid], None)
    assert "reserved for it" in reservation["why"] and answer["reason"] == reservation["why"]

    submitted = at(answer["submitted_at"])
    [fallback] = pending["fallbacks"]
    assert (fallback["model"], fallback["open"]) == ("a100", False)
    assert at(fallback["opens_at"]) == submitted + timedelta(seconds=3600)

    # Now: only the L4 is open to it (A100 opens in an hour), and the L4 is held: the near miss
    # (the held device) comes before the far one (the A100 not accepted yet), whatever the counts.
    now = pending["now"]
    assert now["placeable"] is False and now["chosen"] is None
    codes = [r["code"] for r in now["rejections"]]
    assert codes, now
    assert codes[0] != "model_not_accepted" and "model_not_accepted" in codes, codes


def test_a_job_with_no_reservation_says_so_and_counts_the_jobs_ahead_in_its_queue(api, pool):
    register(api, make_node("n1").gpus(1, "L4"))
    holder = submit(api, count=1)  # no max_runtime: nothing to reserve around
    first = submit(api, count=1)
    urgent = submit(api, count=1, priority=5)
    submit(api, count=1, queue="interactive")  # another queue's line
    later = submit(api, count=1)
    assert api.get(f"/api/v1/jobs/{holder}").json()["state"] == "assigned"
    places = {job: why(api, job)["pending"]["place"] for job in (urgent, first, later)}
    assert places == {urgent: {"position": 1, "ahead": 0, "pending": 3}, first: {"position": 2, "ahead": 1, "pending": 3},
                      later: {"position": 3, "ahead": 2, "pending": 3}}
    pending = why(api, first)["pending"]
    assert pending["reservation"] is None and "reserved no devices" in pending["reservation_note"]
    assert pending["fallbacks"] == []


def test_a_queue_under_its_guarantee_says_in_which_keys(api, pool):
    register(api, make_node("n1").gpus(1, "L4"))
    assert api.patch("/api/v1/queues/interactive", json={"guarantee": {"L4": 2, "gpu": 1}}).status_code == 200
    submit(api, count=1, queue="interactive")
    waiting = submit(api, count=1, queue="interactive")
    queue = why(api, waiting)["pending"]
    assert queue["under_guarantee"] == ["l4"]  # holds 1 L4 of 2; its 1 gpu is all it was guaranteed
    assert queue["queue"]["guarantee"] == {"L4": 2, "gpu": 1}


def test_a_placed_job_shows_the_recorded_scores_beside_the_runner_up(api, pool):
    register(api, make_node("n1").gpus(2, "L4"))
    register(api, make_node("n2").gpus(1, "A100"))
    job = submit(api, count=1, accept=[{"model": "L4"}, {"model": "A100"}])
    placement = why(api, job)["placement"]
    assert why(api, job)["pending"] is None
    chosen, [runner_up] = placement["chosen"], placement["runners_up"]
    assert (placement["node"], chosen["node"], chosen["model"], runner_up["node"], runner_up["model"]) == ("n1", "n1", "L4", "n2", "A100")
    assert (chosen["price_per_hour"], runner_up["price_per_hour"]) == (0.8, 2.2)
    assert chosen["scores"]["total"] >= runner_up["scores"]["total"]
    scorers = set(chosen["scores"]) - {"total"}
    assert scorers and scorers == set(runner_up["scores"]) - {"total"}
    assert all(0 <= chosen["scores"][name] <= 100 for name in scorers)

    with pool.factory() as session:
        [data] = session.scalars(select(EventModel.data).where(EventModel.job_id == job, EventModel.kind == "job.placed"))
    assert data["chosen"] == chosen and data["runners_up"] == [runner_up]

    with transaction(pool.factory) as session:  # as a pass before scores were recorded wrote it
        session.execute(update(EventModel).where(EventModel.job_id == job, EventModel.kind == "job.placed").values(data={}))
    placement = why(api, job)["placement"]
    assert (placement["chosen"], placement["runners_up"]) == (None, [])
    assert placement["note"].startswith("no score breakdown was recorded")


def test_a_preempted_job_says_who_took_its_devices_why_and_how_often(api, pool):
    register(api, make_node("n1").gpus(1, "L4"))
    victim = submit(api, count=1)
    taker = submit(api, count=1, queue="interactive")
    with transaction(pool.factory) as session:
        preemption.preempt(session, victim, taker, "queue interactive is below its guarantee of L4 = 1", grace_s_cap=30)
    stopping = why(api, victim)["preemption"]
    assert (stopping["stopping"], stopping["times"], stopping["by_job_id"], stopping["by_queue"]) == (True, 0, taker, "interactive")
    assert stopping["requested_at"] and stopping["last_preempted_at"] is None

    assert report(api, "n1", victim, "ended", outcome="cancelled", exit_code=None)["accepted"]
    answer = why(api, victim)
    preempted = answer["preemption"]
    assert (preempted["stopping"], preempted["times"], preempted["by_job_id"]) == (False, 1, taker)
    assert preempted["reason"] == "queue interactive is below its guarantee of L4 = 1"
    assert preempted["last_preempted_at"] is not None
    assert answer["state"] == "pending" and answer["pending"]["place"]["position"] == 1
    with pool.factory() as session:
        assert session.scalar(select(JobModel.preemptions).where(JobModel.id == victim)) == 1


@pytest.mark.parametrize(("job_id", "status"), [(999, 404), (0, 422)])
def test_an_unknown_job_is_refused_naming_job_id(api, pool, job_id, status):
    response = api.get(f"/api/v1/jobs/{job_id}/why")
    assert response.status_code == status, response.text
    assert "job_id" in [error["field"] for error in response.json()["errors"]]


def test_any_user_may_ask_why_of_another_users_job_but_never_sees_its_environment(api, pool):
    from poold.services import tokens
    from tests.auth import bearer

    register(api, make_node("n1").gpus(1, "L4"))
    with transaction(pool.factory) as session:
        alice, bob = (tokens.create(session, "user", user=name).token for name in ("alice", "bob"))
    spec = {"name": "train", "command": ["true"], "env": {"WANDB_API_KEY": "hunter2-secret"}, "resources": {"count": 1}}
    placed = api.post("/api/v1/jobs", json={"spec": spec}, headers=bearer(alice)).json()["id"]
    waiting = api.post("/api/v1/jobs", json={"spec": spec}, headers=bearer(alice)).json()["id"]
    for job in (placed, waiting):
        response = api.get(f"/api/v1/jobs/{job}/why", headers=bearer(bob), auth=None)
        assert response.status_code == 200, response.text
        assert "hunter2-secret" not in response.text and "WANDB_API_KEY" not in response.text
    assert why(api, placed)["placement"]["chosen"]["model"] == "L4"
