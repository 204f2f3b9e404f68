"""The web dashboard: one static page at ``/`` and its script and style sheet (docs/dashboard.md).

The files carry no data: the page's script reads the pool from ``/api/v1`` with the bearer
token the person signs in with (``poold.api.auth``), so serving them takes no token. They are
read once from the package (``poold/api/dashboard/``) and answered with a policy that lets the
page run only its own script and style and talk only to this daemon, and that keeps browsers
from caching an old page across an upgrade.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Response

from poold.services import NotFound

FILES = Path(__file__).resolve().parents[1] / "dashboard"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
HEADERS = {
    "Cache-Control": "no-cache",
    # Self only: no inline script or style, no other origin, no framing, no <base> or form elsewhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@cache
def _read(name: str) -> bytes:
    return (FILES / name).read_bytes()


@router.get("/")
def page() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/dashboard/{name}")
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"the dashboard has no file {name!r} (it has {', '.join(sorted(ASSETS))})", field="name")
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)
