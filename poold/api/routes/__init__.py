"""HTTP routes, one module per resource."""

from fastapi import Request

from poold.api.context import AppContext


def ctx_of(request: Request) -> AppContext:
    return request.app.state.ctx
