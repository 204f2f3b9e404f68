"""Tokens over the API: expiry and revocation (on this daemon at once, on another within its
``auth.cache_s``), join tokens' uses, forged reports and rogue nodes refused, another user's
environment withheld, which Unix users a user's jobs may run as, and why a cross-site form
post can do nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from poold import auth as poold_auth
from poold.api.app import create_app
from poold.api.context import AppContext
from poold.db.models import JobModel, NodeModel, TokenModel, utcnow
from poold.db.session import transaction
from poold.services import tokens
from poold_common.tokens import make_token, split_token
from tests.api.calls import NOW, register, submit
from tests.auth import bearer
from tests.builders import make_node


def user_token(pool, name: str, **kwargs) -> str:
    with transaction(pool.factory) as session:
        return tokens.create(session, "user", user=name, **kwargs).token


def join_token(pool, **kwargs) -> str:
    with transaction(pool.factory) as session:
        return tokens.create(session, "join", **kwargs).token


def joining(name: str, token: str, machine_id: str = "m-1") -> dict:
    builder = make_node(name).gpus(1, "L4")
    body = {"node": name, "host": builder.host.model_dump(mode="json"), "devices": [d.model_dump(mode="json") for d in builder.devices],
            "machine_id": machine_id, "credential": make_token()}
    return {"json": body, "headers": bearer(token)}


def count(pool, model) -> int:
    with pool.factory() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_revoked_token_is_refused_at_once_and_an_expired_one_after_its_time(api, pool):
    alice = user_token(pool, "alice")
    assert api.get("/api/v1/nodes", headers=bearer(alice)).status_code == 200  # now in memory
    token_id, _ = split_token(alice)
    assert api.post(f"/api/v1/tokens/{token_id}/revoke").json()["state"] == "revoked"
    refused = api.get("/api/v1/nodes", headers=bearer(alice))
    assert refused.status_code == 401 and f"token {token_id} was revoked at " in refused.json()["detail"]
    assert api.post(f"/api/v1/tokens/{token_id}/revoke").status_code == 409
    assert api.post("/api/v1/tokens/000000000000/revoke").status_code == 404
    short = user_token(pool, "bob", expires_in_s=1)
    with transaction(pool.factory) as session:
        session.execute(update(TokenModel).where(TokenModel.user_name == "bob").values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = api.get("/api/v1/nodes", headers=bearer(short))
    assert expired.status_code == 401 and "expired at" in expired.json()["detail"]
    listed = {t["id"]: t["state"] for t in api.get("/api/v1/tokens", params={"include_ended": "true"}).json()}
    assert listed[token_id] == "revoked" and listed[split_token(short)[0]] == "expired"
    assert token_id not in {t["id"] for t in api.get("/api/v1/tokens").json()}  # valid ones only, by default


def test_a_revoke_through_another_daemon_takes_effect_here_within_the_cache_time(api, pool, settings):
    alice = user_token(pool, "alice")
    ctx, now = AppContext.build(settings, pool.factory), [1000.0]
    ctx.auth.clock = lambda: now[0]
    with TestClient(create_app(ctx)) as other:
        assert other.get("/api/v1/nodes", headers=bearer(alice)).status_code == 200  # kept in its memory
        assert api.post(f"/api/v1/tokens/{split_token(alice)[0]}/revoke").status_code == 200
        assert api.get("/api/v1/nodes", headers=bearer(alice)).status_code == 401
        now[0] += settings.auth.cache_s - 0.1
        assert other.get("/api/v1/nodes", headers=bearer(alice)).status_code == 200  # not yet: within auth.cache_s
        now[0] += 0.2
        assert other.get("/api/v1/nodes", headers=bearer(alice)).status_code == 401


def test_tokens_in_memory_are_read_again_together_so_their_users_never_wait_for_the_store(api, pool, settings):
    # A node heartbeats every 10 s, as long as auth.cache_s: without the periodic read its
    # token would be read from the store at nearly every heartbeat.
    alice = user_token(pool, "alice")
    ctx, now = AppContext.build(settings, pool.factory), [1000.0]
    ctx.auth.clock = lambda: now[0]
    with TestClient(create_app(ctx)) as other:
        assert other.get("/api/v1/nodes", headers=bearer(alice)).status_code == 200
        now[0] += 3 * settings.auth.cache_s
        assert ctx.auth.from_memory(alice) is None  # too old: the next request would read the store
        ctx.auth.revalidate()
        assert ctx.auth.from_memory(alice).user == "alice"  # fresh again, read with the others
        assert api.post(f"/api/v1/tokens/{split_token(alice)[0]}/revoke").status_code == 200  # through another daemon
        ctx.auth.revalidate()
        assert ctx.auth.from_memory(alice) is None  # dropped: its next use reads the store
        assert other.get("/api/v1/nodes", headers=bearer(alice)).status_code == 401


def test_a_join_token_brings_as_many_nodes_as_its_uses_and_does_nothing_else(api, pool):
    join = join_token(pool, uses=2)
    assert api.post("/api/v1/agents/register", **joining("a", join)).status_code == 200
    assert api.post("/api/v1/agents/register", **joining("b", join)).status_code == 200
    spent = api.post("/api/v1/agents/register", **joining("c", join))
    assert spent.status_code == 401 and "is used up" in spent.json()["detail"]
    assert api.get("/api/v1/nodes", headers=bearer(join)).status_code == 403
    assert api.post("/api/v1/jobs", json={"spec": {"name": "x", "command": ["true"]}}, headers=bearer(join)).status_code == 403
    old = join_token(pool, expires_in_s=1)
    with transaction(pool.factory) as session:
        session.execute(update(TokenModel).where(TokenModel.id == split_token(old)[0]).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert api.post("/api/v1/agents/register", **joining("d", old)).status_code == 401
    assert sorted(n["name"] for n in api.get("/api/v1/nodes").json()) == ["a", "b"]
    creds = {t["node"]: t for t in api.get("/api/v1/tokens").json() if t["role"] == "agent"}
    assert set(creds) == {"a", "b"} and creds["a"]["machine_id"] == "m-1" and creds["a"]["expires_at"] is None


def test_a_join_must_bring_a_well_formed_credential_and_a_machine(api, pool):
    join = join_token(pool, uses=5)
    request = joining("a", join)
    for key, value, field in (("credential", None, "credential"), ("credential", "pld_short", "credential"), ("machine_id", None, "machine_id")):
        body = request["json"] | {key: value}
        response = api.post("/api/v1/agents/register", json=body, headers=request["headers"])
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == field
    assert count(pool, NodeModel) == 0


def test_a_forged_end_from_another_nodes_credential_is_refused(api, pool):
    register(api, make_node("n1").gpus(1, "L4"))
    register(api, make_node("n2").gpus(1, "T4"))
    job_id = submit(api, accept=[{"model": "L4"}])
    ended = {"events": [{"job_id": job_id, "kind": "ended", "at": NOW, "exit_code": 0, "outcome": "succeeded"}]}
    n2 = bearer(api.auth.nodes["n2"])
    forged = api.post("/api/v1/agents/n1/events", json=ended, headers=n2)
    assert forged.status_code == 403 and forged.json()["errors"][0]["field"] == "node"
    [result] = api.post("/api/v1/agents/n2/events", json=ended, headers=n2).json()["results"]
    assert not result["accepted"] and result["reason"] == f"job {job_id} is not placed on node n2"
    job = api.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "assigned" and job["allocations"]  # the GPU stays the job's
    assert api.get("/api/v1/agents/n1/assignments", headers=n2).status_code == 403  # nor can it take n1's work


def test_a_rogue_node_needs_a_join_token(api, pool):
    request = joining("rogue", "")
    assert api.post("/api/v1/agents/register", json=request["json"], auth=None).status_code == 401
    assert api.post("/api/v1/agents/register", json=request["json"], headers=bearer(user_token(pool, "mallory"))).status_code == 403
    assert api.post("/api/v1/agents/register", json=request["json"], headers=bearer(api.auth.site.admin)).status_code == 403
    assert count(pool, NodeModel) == 0


def test_another_users_job_shows_no_environment_and_its_owner_comes_from_the_token(api, pool):
    alice, bob = user_token(pool, "alice"), user_token(pool, "bob")
    spec = {"name": "train", "command": ["true"], "env": {"WANDB_API_KEY": "secret"}}
    job = api.post("/api/v1/jobs", json={"spec": spec}, headers=bearer(alice)).json()
    assert job["owner"] == "alice"
    seen = {who: api.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).json() for who, token in
            (("alice", alice), ("bob", bob), ("admin", api.auth.site.admin))}
    assert seen["alice"]["spec"]["env"] == seen["admin"]["spec"]["env"] == {"WANDB_API_KEY": "secret"}
    assert "env" not in seen["bob"]["spec"] and seen["bob"]["hidden"] == ["spec.env"] and seen["bob"]["spec"]["command"] == ["true"]
    assert "secret" not in api.get("/api/v1/jobs", headers=bearer(bob)).text
    forged = api.post("/api/v1/jobs", json={"spec": spec | {"owner": "bob"}}, headers=bearer(alice))
    assert forged.status_code == 422 and forged.json()["errors"][0]["field"] == "spec.owner"


@pytest.mark.parametrize(
    ("who", "unix_user", "status"),
    [("alice", "alice", 201), ("alice", "ml", 201), ("alice", "root", 403), ("bob", "ml", 403), ("bob", None, 201), ("admin", "root", 201)],
)
def test_which_unix_users_a_user_may_run_jobs_as_is_the_daemons_to_say(api, pool, settings, who, unix_user, status):
    settings.auth.run_as = {"alice": ["ml"]}
    settings.auth.run_as_own_name = True
    token = api.auth.site.admin if who == "admin" else user_token(pool, who)
    spec = {"name": "x", "command": ["true"]} | ({"user": unix_user} if unix_user else {})
    response = api.post("/api/v1/jobs", json={"spec": spec}, headers=bearer(token))
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["errors"][0]["field"] == "spec.user" and "auth.run_as" in response.json()["detail"]
        assert count(pool, JobModel) == 0


def test_a_cross_site_form_post_carries_no_token_and_changes_nothing(api, pool):
    job_id = submit(api)
    response = api.post(f"/api/v1/jobs/{job_id}/cancel", content=b"force=true", auth=None,
                        headers={"content-type": "application/x-www-form-urlencoded", "cookie": "session=abc", "origin": "https://evil.example"})
    assert response.status_code == 401
    assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "pending"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"role": "agent", "user": "x"}, "role"), ({"role": "join", "user": "x"}, "user"), ({"role": "user"}, "user"),
     ({"role": "user", "user": "x", "uses": 3}, "uses"), ({"role": "user", "user": "x", "expires_in_s": 0}, "expires_in_s")],
)
def test_a_token_that_cannot_be_made_is_refused_naming_the_field(api, pool, body, field):
    before = count(pool, TokenModel)
    response = api.post("/api/v1/tokens", json=body)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == field
    assert count(pool, TokenModel) == before


def test_a_token_is_shown_once_and_kept_as_a_digest(api, pool):
    made = api.post("/api/v1/tokens", json={"role": "user", "user": "carol", "note": "ci"}).json()
    assert made["token"].startswith(f"pld_{made['id']}_") and made["created_by"] == "admin admin"
    assert "token" not in next(t for t in api.get("/api/v1/tokens").json() if t["id"] == made["id"])
    with pool.factory() as session:
        row = session.get(TokenModel, made["id"])
    assert row.secret_sha256 == tokens.digest(split_token(made["token"])[1]) and made["token"] not in repr(row.__dict__)
    assert api.get("/api/v1/jobs", headers=bearer(made["token"])).status_code == 200


def test_a_token_revoked_here_while_the_tokens_are_read_again_stays_revoked(api, pool, monkeypatch):
    # The periodic read may have read the token's row just before the revoke through this
    # daemon; writing it back afterwards must not let the revoked token work again.
    alice = user_token(pool, "alice")
    assert api.get("/api/v1/nodes", headers=bearer(alice)).status_code == 200
    auth, token_id = api.app.state.ctx.auth, split_token(alice)[0]
    with transaction(pool.factory) as session:
        read_before_revoke = [row for row in session.scalars(select(TokenModel))]
        session.expunge_all()  # kept as read: the revoke below must not reach these copies
        session.execute(update(TokenModel).where(TokenModel.id == token_id).values(revoked_at=utcnow()))

    def read_then_revoked_here(factory):
        auth.forget(token_id)  # what the revoke route does, between the read and its write-back
        return _Rows(read_before_revoke)

    monkeypatch.setattr(poold_auth, "reading", read_then_revoked_here)
    auth.revalidate()
    monkeypatch.undo()
    assert api.get("/api/v1/nodes", headers=bearer(alice)).status_code == 401


class _Rows:
    """A session scope whose query answers rows read earlier."""

    def __init__(self, rows):
        self.rows = rows

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def scalars(self, _query):  # the ids of the tokens not revoked, as they were then
        return [row.id for row in self.rows if row.revoked_at is None]


def test_joins_at_once_never_take_a_join_token_past_its_uses_nor_give_one_name_twice(api, pool):
    """Joins run side by side (the join token's row is locked only for the statement that
    counts a use, at the end of each join): twelve joins of new names with a token of five
    uses bring five nodes; two joins of one name from two machines bring one."""
    from concurrent.futures import ThreadPoolExecutor

    join = join_token(pool, uses=5)
    with ThreadPoolExecutor(6) as threads:
        answers = list(threads.map(lambda n: api.post("/api/v1/agents/register", **joining(f"n{n}", join)).status_code, range(12)))
    assert sorted(answers) == [200] * 5 + [401] * 7
    with pool.factory() as session:
        assert session.scalar(select(TokenModel.uses_left).where(TokenModel.id == split_token(join)[0])) == 0
    assert count(pool, NodeModel) == 5
    with pool.factory() as session:
        assert session.scalar(select(func.count()).where(TokenModel.role == "agent", TokenModel.node.like("n%"))) == 5

    twice = join_token(pool, uses=5)
    with ThreadPoolExecutor(2) as threads:
        answers = list(threads.map(lambda m: api.post("/api/v1/agents/register", **joining("same", twice, machine_id=m)).status_code,
                                   ("m-1", "m-2")))
    assert sorted(answers) == [200, 403]
    creds = [t for t in api.get("/api/v1/tokens").json() if t["role"] == "agent" and t["node"] == "same"]
    assert len(creds) == 1
