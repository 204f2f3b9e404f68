"""Routes the node agents call: register, heartbeat, assignments, job events."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from poold import __version__
from poold.api.context import AppContext
from poold.api.errors import responses
from poold.api.retry import RetryingRoute
from poold.api.routes import NodeNamePath, ctx_of
from poold_wire.messages import (
    AssignmentsResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JobEventsRequest,
    JobEventsResponse,
    RegisterRequest,
    RegisterResponse,
)
from poold.db.session import reading, transaction
from poold.services import TooLarge, jobs, nodes, recovery

router = APIRouter(prefix="/agents", tags=["agents"], route_class=RetryingRoute)


@router.post("/register", response_model=RegisterResponse, responses=responses(400, 409, 413, 422))
def register(body: RegisterRequest, ctx: AppContext = Depends(ctx_of)) -> RegisterResponse:
    nodes.check_protocol(body.protocol_version)
    _check_devices(ctx, body.devices)
    with transaction(ctx.factory) as session:
        node = nodes.register(session, body.node, body.host, body.devices, body.agent_version or __version__, body.machine_id,
                              ctx.settings.nodes)
        name, drained = node.name, node.drained
    ctx.reports.written(name, body.host, body.devices, drained, extra=(body.machine_id,))  # as a heartbeat running no job
    ctx.wake_scheduler()
    return RegisterResponse(node=name, heartbeat_interval_s=ctx.settings.nodes.heartbeat_interval_s)


@router.post("/{node}/heartbeat", response_model=HeartbeatResponse, responses=responses(400, 404, 409, 413, 422))
async def heartbeat(node: NodeNamePath, body: HeartbeatRequest, ctx: AppContext = Depends(ctx_of)) -> HeartbeatResponse:
    """Written to the store only when it says something new (``poold.telemetry``): a repeated
    report is answered from memory on the event loop, a new one written in a worker thread."""
    _check_devices(ctx, body.devices)
    extra = (body.machine_id, *sorted(body.running_jobs))
    drained = ctx.reports.answer_from_memory(node, body.host, body.devices, extra)
    if drained is None:
        drained = await run_in_threadpool(_write_heartbeat, ctx, node, body, extra)
    return HeartbeatResponse(drained=drained)


def _check_devices(ctx: AppContext, devices: list) -> None:
    limit = ctx.settings.limits.devices_per_node
    if len(devices) > limit:
        raise TooLarge(f"{len(devices)} devices on one node; at most {limit} (limits.devices_per_node)", field="devices")


def _write_heartbeat(ctx: AppContext, node: str, body: HeartbeatRequest, extra: tuple) -> bool:
    with transaction(ctx.factory) as session:
        row = recovery.heartbeat(session, node, body.host, body.devices, body.running_jobs, body.machine_id, ctx.settings.nodes)
        drained = row.drained
        # While a running job is missing from the agent's list, every heartbeat is written:
        # one of them loses the job once its grace is over.
        settling = jobs.unreported_on(session, row.id)
    if not settling:
        ctx.reports.written(node, body.host, body.devices, drained, extra)
    else:
        ctx.reports.forget(node)
    return drained


@router.get("/{node}/assignments", response_model=AssignmentsResponse, responses=responses(404, 409, 422))
def assignments(
    node: NodeNamePath,
    machine_id: str | None = Query(default=None, max_length=200, description="as at register; another machine's is refused (409)"),
    ctx: AppContext = Depends(ctx_of),
) -> AssignmentsResponse:
    with reading(ctx.factory) as session:
        return jobs.assignments(session, node, machine_id)


@router.post("/{node}/events", response_model=JobEventsResponse, responses=responses(400, 404, 413, 422))
def job_events(node: NodeNamePath, body: JobEventsRequest, ctx: AppContext = Depends(ctx_of)) -> JobEventsResponse:
    limit = ctx.settings.limits.events_per_request
    if len(body.events) > limit:
        raise TooLarge(f"{len(body.events)} events in one report; at most {limit} (limits.events_per_request)", field="events")
    results = []
    for event in body.events:
        # One transaction per event: a refused report never undoes an accepted one.
        with transaction(ctx.factory) as session:
            results.append(jobs.apply_event(session, node, event))
    if any(r.accepted and r.kind == "ended" for r in results):
        ctx.wake_scheduler()
    return JobEventsResponse(results=results)
