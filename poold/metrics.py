"""The daemon's ``/metrics``: Prometheus text format, behind the API's tokens.

Two kinds of figures, in one registry per app (tests make several apps in one process, so
nothing is registered globally):

- the daemon's own instruments (:class:`DaemonMetrics`): the scheduling passes (duration,
  placements, submit-to-placed latency; fed by ``Scheduler.observer``), the API's requests
  by route template and status (:class:`RequestMetrics`), whether this replica leads, its
  version;
- figures read from the store (``poold.metrics_pool.PoolCollector``): devices, jobs, queues,
  nodes, cost. They are reused for ``metrics.cache_s`` seconds, so that a scrape of a pool of
  thousands of nodes costs a handful of queries at most every few seconds.

docs/operations.md ("Metrics and dashboards") lists every metric with its type and labels.
"""

# No ``from __future__ import annotations``: the route's token dependency is imported inside
# install(), and FastAPI reads a route's annotations as objects only when they are objects.
import re
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import compile_path

from poold import __version__

# Seconds: from a fast pass on a small pool to a slow one on thousands of nodes.
PASS_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds a job waits for its placement: from the pass that follows its submit to a day.
WAIT_BUCKETS_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
PLACEMENT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The classic text format, which every Prometheus (and promtool) reads.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
# The route label of a request no route matched (a typo, a scanner): one series for them all.
OTHER_ROUTE = "other"


class DaemonMetrics:
    """The daemon's instruments and its registry. It is the scheduler's ``PassObserver``; the
    store collector is added by :func:`install`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submit_to_placed = Histogram(
            "poold_submit_to_placed_seconds", "Seconds from a job's submit to the commit of its placement.",
            buckets=WAIT_BUCKETS_S, registry=r)
        self.pass_duration = Histogram(
            "poold_scheduling_pass_duration_seconds", "Seconds one scheduling pass took (this replica's passes).",
            buckets=PASS_BUCKETS_S, registry=r)
        self.placements_per_pass = Histogram(
            "poold_placements_per_pass", "Placements committed by one scheduling pass.", buckets=PLACEMENT_BUCKETS, registry=r)
        self.placements = Counter("poold_placements", "Placements committed by this replica's scheduling passes.", registry=r)
        self.requests = Counter(
            "poold_api_requests", "HTTP requests answered, by route template, method and status (401s and 404s too).",
            ["route", "method", "status"], registry=r)
        self.request_duration = Histogram(
            "poold_api_request_duration_seconds", "Seconds to answer an HTTP request, by route template.",
            ["route"], buckets=REQUEST_BUCKETS_S, registry=r)
        Gauge("poold_build_info", "The daemon's version (always 1).", ["version"], registry=r).labels(__version__).set(1)
        self._watching = False

    def watch(self, ctx: Any) -> None:
        """Observe ``ctx``'s scheduler, and read its leader lock and store at each scrape
        (once: an app made again over the same context adds nothing twice)."""
        from poold.metrics_pool import PoolCollector  # the store's modules import the app's context

        if self._watching:
            return
        ctx.scheduler.observer = self
        self.registry.register(LeaderCollector(ctx.leader))
        self.registry.register(PoolCollector(ctx))
        self._watching = True

    # ---- the scheduler's PassObserver -----------------------------------------------------

    def pass_ran(self, duration_s: float, placed: int) -> None:
        self.pass_duration.observe(duration_s)
        self.placements_per_pass.observe(placed)
        self.placements.inc(placed)

    def job_placed(self, waited_s: float) -> None:
        self.submit_to_placed.observe(waited_s)

    # ---- requests ---------------------------------------------------------------------------

    def request_done(self, route: str, method: str, status: int, duration_s: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_duration.labels(route).observe(duration_s)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class LeaderCollector(Collector):
    """``poold_leader``: 1 on the replica that held the leader lock at its last periodic tick."""

    def __init__(self, leader: Any):
        self.leader = leader

    def collect(self):
        family = GaugeMetricFamily("poold_leader", "1 on the replica that holds the leader lock (runs the scheduling passes), else 0.")
        family.add_metric([], 1.0 if self.leader.leading else 0.0)
        yield family


class RouteTemplates:
    """The template of the app's route that a raw path is for (``/api/v1/jobs/{job_id}`` for
    ``/api/v1/jobs/42``), or ``other``. Read from the app's routes at the first request, and matched here rather than taken from the router, so that
    a request refused before routing (a body too large) counts under its route too."""

    def __init__(self, app: Any):
        self.app = app
        self._literal: set[str] | None = None
        self._patterns: list[tuple[re.Pattern[str], str]] = []

    def of(self, path: str) -> str:
        if self._literal is None:
            self._load()
        if path in self._literal:  # type: ignore[operator]
            return path
        return next((template for pattern, template in self._patterns if pattern.match(path)), OTHER_ROUTE)

    def _load(self) -> None:
        # The router's own paths (those of the OpenAPI document and the unlisted ones), not the
        # document itself: building it costs a third of a second, at every app's first request.
        try:  # FastAPI keeps included routers wrapped; this walks into them (older ones flatten them)
            from fastapi.routing import iter_route_contexts
        except ImportError:
            routes = self.app.router.routes
        else:
            routes = iter_route_contexts(self.app.router.routes)
        templates = {route.path for route in routes if isinstance(getattr(route, "path", None), str)}
        self._patterns = [(compile_path(t)[0], t) for t in sorted(templates) if "{" in t]
        self._literal = {t for t in templates if "{" not in t}


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by its route's template (never
    the raw path: the labels stay few), method and status; see :class:`RouteTemplates`."""

    def __init__(self, app: Any, metrics: DaemonMetrics, templates: RouteTemplates):
        self.app, self.metrics, self.templates = app, metrics, templates

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def watched(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            self.metrics.request_done(self.templates.of(scope["path"]), scope["method"], status, time.perf_counter() - started)


def install(app: FastAPI, ctx: Any) -> DaemonMetrics:
    """Serve ``/metrics`` on ``app`` (any user's or admin's token), count its requests, and
    feed it from ``ctx``'s scheduler, leader lock and store (``ctx.metrics``)."""
    # Imported here: the API's modules import the app's context, which holds a DaemonMetrics.
    from poold.api.auth import Person

    metrics: DaemonMetrics = ctx.metrics
    metrics.watch(ctx)

    def scrape(_who: Person, request: Request) -> Response:
        """The pool's figures for Prometheus (text format 0.0.4)."""
        return Response(request.app.state.ctx.metrics.exposition(), media_type=TEXT_FORMAT)

    app.add_api_route("/metrics", scrape, methods=["GET"], tags=["meta"], response_class=Response, include_in_schema=False)
    app.add_middleware(RequestMetrics, metrics=metrics, templates=RouteTemplates(app))
    return metrics
