"""Tokens for tests that call the API, in one place: what the store is given, and what each
request presents.

:func:`authorised` puts a site's tokens into a store (``poold.demo.issue_tokens``: an admin's,
a user's, a join token good for many nodes) and gives a client :class:`Credentials`, an
``httpx.Auth`` (for a ``TestClient``, or an ``httpx.Client`` of a live daemon) that presents
per request what the real caller would: on a node's agent routes and its log uploads, that
node's credential; on a register, the node's credential once it has one, else the join token
with a credential made as an agent makes it (``poold_common.tokens.make_token``; a machine
id too, if the body names none), remembered for the node once the join is taken; an admin's
token everywhere else. A request that carries its own ``Authorization`` is sent as it is, so
tests of refusals choose their token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator

import httpx
from sqlalchemy.orm import Session, sessionmaker

from poold.db.models import TokenModel
from poold.db.session import transaction
from poold.demo import SiteTokens, issue_tokens
from poold.services import tokens
from poold_common.tokens import make_token, split_token

_NODE_ROUTE = re.compile(r"/api/v1/agents/([^/]+)/(?:heartbeat|assignments|events)")
_LOG_ROUTE = re.compile(r"/api/v1/jobs/[^/]+/log")


def node_credential(factory: sessionmaker[Session], node: str, machine_id: str = "machine-1") -> str:
    """A credential for ``node`` put straight into the store (no node row comes with it)."""
    token = make_token()
    token_id, secret = split_token(token)
    with transaction(factory) as session:
        session.add(TokenModel(id=token_id, secret_sha256=tokens.digest(secret), role="agent", node=node, machine_id=machine_id))
    return token


def authorised(client: httpx.Client, factory: sessionmaker[Session]) -> httpx.Client:
    """``client`` presenting :class:`Credentials` over a site's new tokens in the store."""
    client.auth = Credentials(issue_tokens(factory, nodes=10_000))
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Credentials(httpx.Auth):
    requires_request_body = True

    def __init__(self, site: SiteTokens):
        self.site = site
        self.nodes: dict[str, str] = {}  # node -> its credential, once its join was taken

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" in request.headers:
            yield request
            return
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/agents/register":
            yield from self._register(request)
            return
        if match := _NODE_ROUTE.fullmatch(path):
            token = self.nodes.get(match.group(1))
        elif request.method == "PUT" and _LOG_ROUTE.fullmatch(path):
            token = self.nodes.get(request.url.params.get("node", ""))
        else:
            token = self.site.admin
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _register(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        try:
            body = json.loads(request.content)
        except ValueError:
            body = None
        node = body.get("node") if isinstance(body, dict) else None
        if isinstance(node, str) and node in self.nodes:
            request.headers["Authorization"] = f"Bearer {self.nodes[node]}"
            yield request
            return
        if isinstance(body, dict) and isinstance(node, str):
            body.setdefault("credential", make_token())
            body["machine_id"] = body.get("machine_id") or f"machine-of-{node}"
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            request = httpx.Request(request.method, request.url, headers=headers, content=json.dumps(body).encode())
        request.headers["Authorization"] = f"Bearer {self.site.join}"
        response = yield request
        if response.status_code == 200 and isinstance(node, str):
            self.nodes[node] = body["credential"]
