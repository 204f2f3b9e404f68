"""HTTP routes, one module per resource, and the path parameters they share."""

from typing import Annotated

from fastapi import Path, Request

from poold.api.context import AppContext
from poold_wire.bounds import INT64_MAX
from poold_wire.messages import NODE_NAME_PATTERN

JobIdPath = Annotated[int, Path(ge=1, le=INT64_MAX, description="the job's id")]
NodeNamePath = Annotated[str, Path(min_length=1, max_length=200, pattern=NODE_NAME_PATTERN, description="the node's name")]


def ctx_of(request: Request) -> AppContext:
    return request.app.state.ctx
