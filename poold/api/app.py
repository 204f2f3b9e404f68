"""The FastAPI application: routes are thin, decisions live in ``poold.services``."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from poold import __version__
from poold.api import errors
from poold.api.auth import SECURITY_SCHEME
from poold.api.context import AppContext
from poold.api.routes import agents, jobs, nodes, pool, queues, tokens
from poold_wire.messages import HeartbeatRequest


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="poold", version=__version__, description="A resource pool for heterogeneous accelerators.",
        # A backstop for bodies sent without a length; declared ones are refused by BodyLimit.
        max_body_size=2 * ctx.settings.limits.request_bytes,
    )
    app.state.ctx = ctx
    app.include_router(agents.router, prefix="/api/v1")
    app.include_router(jobs.router, prefix="/api/v1")
    app.include_router(nodes.router, prefix="/api/v1")
    app.include_router(tokens.router, prefix="/api/v1")
    app.include_router(queues.router, prefix="/api/v1")
    app.include_router(pool.router, prefix="/api/v1")
    errors.install(app)
    app.add_middleware(errors.BodyLimit, limit=ctx.settings.limits.request_bytes)
    _document(app, HeartbeatRequest)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app


def _document(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put in the OpenAPI document what routes do by hand: the request bodies they read raw and
    validate themselves (their ``openapi_extra`` refers to them), and the bearer token every
    route under ``/api`` takes (``poold.api.auth``)."""
    default = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = default()
            document["components"].setdefault("securitySchemes", {}).update(SECURITY_SCHEME)
            for path, operations in document["paths"].items():
                if path.startswith("/api/"):
                    for operation in operations.values():
                        operation["security"] = [{name: []} for name in SECURITY_SCHEME]
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas.setdefault(model.__name__, schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
