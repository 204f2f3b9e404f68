"""The FastAPI application: routes are thin, decisions live in ``poold.services``."""

from __future__ import annotations

from fastapi import FastAPI

from poold import __version__
from poold.api import errors
from poold.api.context import AppContext
from poold.api.routes import agents, jobs, nodes


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="poold", version=__version__, description="A resource pool for heterogeneous accelerators.")
    app.state.ctx = ctx
    app.include_router(agents.router, prefix="/api/v1")
    app.include_router(jobs.router, prefix="/api/v1")
    app.include_router(nodes.router, prefix="/api/v1")
    errors.install(app)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
