"""The role matrix: every endpoint, called with every kind of credential, answers 401, 403 or
its success as the roles say, and a refusal changes nothing in the store (every table, and
the job logs on disk).

The site: nodes n1 and n2 (each with its agent's credential), alice's job placed on n1 with a
secret in its environment, users alice and bob, an admin.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from poold.api.app import create_app
from poold.api.context import AppContext
from poold.db.models import Base, TokenModel, utcnow
from poold.db.session import make_engine, make_sessionmaker, transaction
from poold.services import tokens
from poold_common.tokens import make_token, split_token
from tests.api.calls import NOW, register
from tests.auth import bearer
from tests.builders import make_node

JOB = {"name": "train", "command": ["true"], "env": {"WANDB_API_KEY": "secret"}, "resources": {"count": 1}}
# Credentials no route takes: 401 everywhere.
INVALID = ("none", "not a token", "unknown", "wrong secret", "expired", "revoked")
ROLES = ("join", "agent n1", "agent n2", "bob", "alice", "admin")
USERS = {"alice": 200, "bob": 200, "admin": 200}


def case(name, method, path, allowed, **request):
    """One endpoint: who gets through (credential -> status); every other credential gets 403, invalid ones 401."""
    return pytest.param(method, path, request, allowed, id=name)


MATRIX = [
    case("submit", "POST", "/api/v1/jobs", {"alice": 201, "bob": 201, "admin": 201}, json={"spec": JOB}),
    case("plan", "POST", "/api/v1/jobs/plan", USERS, json={"spec": JOB}),
    case("jobs", "GET", "/api/v1/jobs", USERS),
    case("job", "GET", "/api/v1/jobs/{job}", USERS),
    case("why", "GET", "/api/v1/jobs/{job}/why", USERS),
    case("cancel", "POST", "/api/v1/jobs/{job}/cancel", {"alice": 200, "admin": 200}),
    case("cancel by force", "POST", "/api/v1/jobs/{job}/cancel", {"admin": 200}, params={"force": "true"}),
    case("read log", "GET", "/api/v1/jobs/{job}/log", {"alice": 200, "admin": 200}),
    case("append log", "PUT", "/api/v1/jobs/{job}/log", {"agent n1": 200}, params={"offset": 0, "node": "n1"}, content=b"forged"),
    case("nodes", "GET", "/api/v1/nodes", USERS),
    case("devices", "GET", "/api/v1/devices", USERS),
    case("return device", "POST", "/api/v1/devices/{device}/return", {"admin": 409}),  # past the door: not quarantined
    case("drain", "POST", "/api/v1/nodes/n1/drain", {"admin": 200}, json={"reason": "x"}),
    case("undrain", "POST", "/api/v1/nodes/n1/undrain", {"admin": 200}),
    case("register", "POST", "/api/v1/agents/register", {"agent n1": 200}, json="register n1"),
    case("heartbeat", "POST", "/api/v1/agents/n1/heartbeat", {"agent n1": 200}, json="heartbeat n1"),
    case("assignments", "GET", "/api/v1/agents/n1/assignments", {"agent n1": 200}),
    case("events", "POST", "/api/v1/agents/n1/events", {"agent n1": 200}, json="ended"),
    case("tokens", "GET", "/api/v1/tokens", {"admin": 200}),
    case("make token", "POST", "/api/v1/tokens", {"admin": 201}, json={"role": "user", "user": "carol"}),
    case("revoke token", "POST", "/api/v1/tokens/{spare}/revoke", {"admin": 200}),
    case("queues", "GET", "/api/v1/queues", USERS),
    case("queue", "GET", "/api/v1/queues/default", USERS),
    case("pool", "GET", "/api/v1/pool", USERS),
    case("usage", "GET", "/api/v1/usage", USERS),
    case("create queue", "POST", "/api/v1/queues", {"admin": 201}, json={"name": "batch", "weight": 2, "guarantee": {"L4": 1}}),
    case("change queue", "PATCH", "/api/v1/queues/default", {"admin": 200}, json={"weight": 3}),
    case("delete queue", "DELETE", "/api/v1/queues/default", {"admin": 409}),  # past the door: the config file names it
]


@pytest.fixture
def site(api, pool):
    """The site, and the Authorization header of every credential."""
    n1, n2 = make_node("n1").gpus(1, "L4"), make_node("n2").gpus(1, "T4")
    bodies = {"register n1": register(api, n1, machine_id="m-n1")}
    register(api, n2, machine_id="m-n2")
    bodies["heartbeat n1"] = {key: bodies["register n1"][key] for key in ("host", "devices")} | {"machine_id": "m-n1"}
    with transaction(pool.factory) as session:
        people = {name: tokens.create(session, "user", user=name).token for name in ("alice", "bob", "expired", "revoked", "spare")}
        session.execute(update(TokenModel).where(TokenModel.user_name == "expired").values(expires_at=utcnow() - timedelta(seconds=1)))
        tokens.revoke(session, split_token(people["revoked"])[0])
    job = api.post("/api/v1/jobs", json={"spec": JOB}, headers=bearer(people["alice"])).json()["id"]
    bodies["ended"] = {"events": [{"job_id": job, "kind": "ended", "at": NOW, "exit_code": 0, "outcome": "succeeded"}]}
    alice_id, _ = split_token(people["alice"])
    headers = {
        "none": {},
        "not a token": {"Authorization": "Bearer hunter2"},
        "unknown": bearer(make_token()),
        "wrong secret": bearer(f"pld_{alice_id}_{'x' * 43}"),
        "expired": bearer(people["expired"]),
        "revoked": bearer(people["revoked"]),
        "join": bearer(api.auth.site.join),
        "agent n1": bearer(api.auth.nodes["n1"]),
        "agent n2": bearer(api.auth.nodes["n2"]),
        "bob": bearer(people["bob"]),
        "alice": bearer(people["alice"]),
        "admin": bearer(api.auth.site.admin),
    }
    device = n1.devices[0].uuid
    return {"job": job, "device": device, "spare": split_token(people["spare"])[0]}, bodies, headers


def dump(pool, state_dir) -> tuple[dict, dict]:
    """Every row of every table, and every job log's bytes."""
    with pool.factory() as session:
        rows = {table.name: session.execute(select(table).order_by(*table.primary_key.columns)).all()
                for table in Base.metadata.sorted_tables}
    logs = {path.name: path.read_bytes() for path in sorted((state_dir / "logs").glob("*"))} if (state_dir / "logs").exists() else {}
    return rows, logs


@pytest.mark.parametrize(("method", "path", "request_", "allowed"), MATRIX)
def test_every_endpoint_answers_each_credential_as_its_role_allows(api, pool, settings, site, method, path, request_, allowed):
    names, bodies, headers = site
    url = path.format(**names)
    request = {key: bodies[value] if key == "json" and isinstance(value, str) else value for key, value in request_.items()}
    # Refusals first, each checked to change nothing; then the credentials that get through.
    before = dump(pool, settings.state_dir)
    for credential in sorted(headers, key=lambda name: name in allowed):
        response = api.request(method, url, headers=headers[credential], auth=None, **request)
        expected = allowed.get(credential, 401 if credential in INVALID else 403)
        assert response.status_code == expected, (credential, response.text)
        if expected in (401, 403):
            assert dump(pool, settings.state_dir) == before, credential
            assert response.json()["detail"]
        if expected == 401:
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["errors"][0]["field"] == "Authorization"


def test_the_matrix_covers_every_route(settings):
    app = create_app(AppContext.build(settings, make_sessionmaker(make_engine("sqlite://"))))
    paths = app.openapi()["paths"]
    routes = {(method.upper(), path) for path, methods in paths.items() for method in methods if path != "/healthz"}
    named = {"{job}": "{job_id}", "{device}": "{uuid}", "{spare}": "{token_id}", "n1": "{node}", "default": "{name}"}
    covered = set()
    for param in MATRIX:
        method, path = param.values[0], param.values[1]
        for ours, theirs in named.items():
            path = path.replace(f"/{ours}/", f"/{theirs}/") if not path.endswith(f"/{ours}") else path[: -len(ours)] + theirs
        covered.add((method, path))
    assert routes <= covered, routes - covered  # /healthz is the one route without a token
