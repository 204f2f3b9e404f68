"""The FastAPI application: routes are thin, decisions live in ``poold.services``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from poold import __version__
from poold.api.context import AppContext
from poold.api.routes import agents, jobs, nodes
from poold.jobspec import error_path
from poold.services import ServiceError
from poold.services.logs import OffsetMismatch


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="poold", version=__version__, description="A resource pool for heterogeneous accelerators.")
    app.state.ctx = ctx
    app.include_router(agents.router, prefix="/api/v1")
    app.include_router(jobs.router, prefix="/api/v1")
    app.include_router(nodes.router, prefix="/api/v1")

    @app.exception_handler(OffsetMismatch)
    async def _offset(_request: Request, exc: OffsetMismatch) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": exc.message, "size": exc.size})

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        content: dict = {"detail": exc.message}
        if exc.field is not None:
            content["detail"] = f"{exc.field}: {exc.message}"
            content["errors"] = [{"field": exc.field, "message": exc.message}]
        return JSONResponse(status_code=exc.status, content=content)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            loc = [part for part in error_path(error) if part != "body"]
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            errors.append({"field": ".".join(loc), "message": message})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(status_code=422, content={"detail": f"invalid request: {detail}", "errors": errors})

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
