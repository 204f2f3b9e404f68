"""Who is calling: every API route takes a bearer token (``Authorization: Bearer pld_...``)
and names the roles it serves (``poold.services.tokens``).

No token, or one that is not valid, is 401, before the request's body is read and before
anything is written; a valid token of a role the route does not serve, or a node's
credential on another node's route, is 403. Tokens travel in a header, never in a cookie,
so a form another site makes a browser post carries none: a cross-site request is refused
like any other without a token.

Each check is one dependency that reads the header itself (FastAPI's nested dependencies
cost more than the check), and the heartbeat route, answered from memory by the thousand a
second, calls :func:`node_agent` directly. The OpenAPI document declares the scheme
(``SECURITY_SCHEME``) for every route under ``/api``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from poold.api.routes import NodeNamePath
from poold.services import Forbidden, Unauthorized
from poold.services.tokens import Principal

SECURITY_SCHEME = {
    "token": {"type": "http", "scheme": "bearer",
              "description": "a poold token (`poold token create`); on a node's routes, its agent's own credential"},
}


async def authenticate(request: Request) -> Principal:
    """Whom the request's bearer token speaks for (from memory when it can); 401 otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("no token: send `Authorization: Bearer <token>` (poold token create)", field="Authorization")
    authenticator = request.app.state.ctx.auth
    return authenticator.from_memory(token) or await run_in_threadpool(authenticator.from_store, token)


async def node_agent(request: Request, node: str) -> Principal:
    """The caller, when it is ``node``'s agent (its credential); 401 or 403 naming ``node``
    otherwise. Routes that name the node in a query (a log upload) call it themselves."""
    who = await authenticate(request)
    if who.role != "agent" or who.node != node:
        raise Forbidden(f"{who} may not report or fetch work for node {node}: that takes node {node}'s own credential", field="node")
    return who


def _role(*roles: str):
    article = " or ".join(f"an {role}" if role[0] in "aeiou" else f"a {role}" for role in roles)

    async def allowed(request: Request) -> Principal:
        who = await authenticate(request)
        if who.role not in roles:
            raise Forbidden(f"{who} may not do this: it takes {article} token")
        return who

    return allowed


async def _node_agent(request: Request, node: NodeNamePath) -> Principal:
    return await node_agent(request, node)


Admin = Annotated[Principal, Depends(_role("admin"))]
"""An admin's token."""
Person = Annotated[Principal, Depends(_role("admin", "user"))]
"""A user's or an admin's token."""
NodeAgent = Annotated[Principal, Depends(_node_agent)]
"""The credential of the node the path names."""
Caller = Annotated[Principal, Depends(authenticate)]
"""Any valid token (the route decides what each role may)."""
