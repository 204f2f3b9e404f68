"""The API's error bodies, one shape for every refusal, described in the OpenAPI document.

Every 4xx answer is ``{"detail": "...", "errors": [{"field": "...", "message": "..."}]}``:
``detail`` is one line for a person; ``errors`` (present when the refusal is about given
fields) names each field by its dotted path in the request (``spec.resources.count``,
``devices.0.attributes.mig_slices``; a path or query parameter by its name). A log upload at
the wrong offset (409) also carries the log's real ``size``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from poold.api.retry import StoreBusy
from poold.jobspec import error_path
from poold.services import ServiceError
from poold.services.logs import OffsetMismatch

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)

# Where FastAPI puts a request value in an error's location; the field path starts after it.
_SOURCES = ("body", "query", "path", "header", "cookie")

_MEANING = {
    400: "The request cannot be served as sent: a body that is not JSON, or an agent protocol this daemon does not serve",
    401: "No token, or one that is not valid (unknown, revoked, expired); the answer carries `WWW-Authenticate: Bearer`",
    403: "Not this caller's to do: its role does not allow it, or the job, node or log is another's",
    404: "No such job or node",
    409: "The request conflicts with the current state: the job already ended, or a log offset is not the log's size",
    413: "Larger than the daemon's limits (limits.*): a log chunk, a job's whole log, events in one report, devices of one node",
    422: "A field is missing or has a wrong type or value; `errors` names each",
    503: "The store kept refusing the request's transaction as a lost race (deadlock, serialization failure); try again",
}


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="dotted path in the request: spec.resources.count, devices.0.index, offset")
    message: str


class ErrorOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detail: str = Field(description="what was refused and why, in one line")
    errors: list[FieldError] = Field(default_factory=list, description="the fields at fault, when the refusal is about fields")


class LogConflictOut(ErrorOut):
    size: int = Field(description="bytes the daemon holds of the log: resend from there")


def responses(*statuses: int, conflict: type[ErrorOut] = ErrorOut) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that answers these error statuses, and those every route
    may: 401 and 403 (every route takes a token: ``poold.api.auth``), 503 (any route touching
    the store: ``poold.api.retry``)."""
    return {status: {"model": conflict if status == 409 else ErrorOut, "description": _MEANING[status]}
            for status in sorted({401, 403, *statuses, 503})}


def install(app: FastAPI) -> None:
    """Answer every refusal with an :class:`ErrorOut` body."""

    @app.exception_handler(OffsetMismatch)
    async def _offset(_request: Request, exc: OffsetMismatch) -> JSONResponse:
        return JSONResponse(status_code=409, content=LogConflictOut(detail=exc.message, size=exc.size).model_dump())

    @app.exception_handler(StoreBusy)
    async def _busy(_request: Request, exc: StoreBusy) -> JSONResponse:
        body = ErrorOut(detail=f"the store is busy (a transaction kept losing races: {exc}); try again")
        return JSONResponse(status_code=503, headers={"Retry-After": "1"}, content=body.model_dump())

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        body = ErrorOut(detail=exc.message)
        if exc.field is not None:
            body = ErrorOut(detail=f"{exc.field}: {exc.message}", errors=[FieldError(field=exc.field, message=exc.message)])
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(status_code=exc.status, content=body.model_dump(), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            path = error_path(error)
            if path and path[0] in _SOURCES:
                path = path[1:]
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            if error["type"] == "json_invalid":  # FastAPI puts the character position where a field goes
                message = f"not JSON: {error.get('ctx', {}).get('error', 'cannot decode')} at character {path[0] if path else 0}"
                path = []
            errors.append(FieldError(field=".".join(path) or "(body)", message=message))
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return JSONResponse(status_code=422, content=ErrorOut(detail=f"invalid request: {detail}", errors=errors).model_dump())


def parse_json(raw: bytes) -> Any:
    """A request body read as JSON, refused as FastAPI refuses one (422, ``json_invalid``).
    Read with orjson: thousands of nodes send heartbeats of about 15 KB, and the standard
    library's parser takes over twice as long over one (integers past 64 bits come back as
    floats, which every field bounded to 64 bits refuses by name)."""
    try:
        return orjson.loads(raw)
    except (ValueError, RecursionError) as exc:
        position = getattr(exc, "pos", 0)
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error", "input": {}, "ctx": {"error": getattr(exc, "msg", str(exc))}}]
        ) from None


def validate_body(model: type[BaseModelT], body: Any) -> BaseModelT:
    """``body`` (a decoded JSON request body) as ``model``, refused as FastAPI refuses a body
    declared as that model (422 naming each field)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


class BodyLimit:
    """ASGI middleware: a request whose declared body (``content-length``) passes ``limit``
    bytes is refused with 413 and the one error body, before any of it is read. (A body sent
    without a length is cut by FastAPI's own ``max_body_size``, twice the limit.)"""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.limit:
                message = f"a request body of {int(declared)} bytes; at most {self.limit} (limits.request_bytes)"
                body = ErrorOut(detail=message, errors=[FieldError(field="body", message=message)])
                await JSONResponse(status_code=413, content=body.model_dump())(scope, receive, send)
                return
        await self.app(scope, receive, send)
