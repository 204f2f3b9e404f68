"""Routes the node agents call: register, heartbeat, assignments, job events.

Each takes the node's own credential, which its agent made and sent with its join (a
register with a join token); nobody else may report for a node or fetch its work.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from poold import __version__
from poold.api.auth import Caller, NodeAgent, node_agent
from poold.api.context import AppContext
from poold.api.errors import parse_json, responses, validate_body
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
from poold.services import TooLarge, jobs, nodes, recovery, tokens
from poold.telemetry import fingerprint_of

router = APIRouter(prefix="/agents", tags=["agents"], route_class=RetryingRoute)


@router.post("/register", response_model=RegisterResponse, responses=responses(400, 409, 413, 422))
def register(body: RegisterRequest, who: Caller, ctx: AppContext = Depends(ctx_of)) -> RegisterResponse:
    """A new node joins with a join token, sending the credential its agent made for it
    (``credential``), from then on the node's only token; a known node registers again with
    that credential, from the machine it joined from."""
    nodes.check_protocol(body.protocol_version)
    _check_devices(ctx, body.devices)
    # Remembered as the heartbeat that says the same, running no job: the next is answered from memory.
    same = HeartbeatRequest(host=body.host, devices=body.devices, running_jobs=[], machine_id=body.machine_id).model_dump(mode="json")
    with transaction(ctx.factory) as session:
        joined = tokens.check_register(session, who, body.node, body.machine_id, body.credential)
        node = nodes.register(session, body.node, body.host, body.devices, body.agent_version or __version__, body.machine_id,
                              ctx.settings.nodes)
        node.report_fingerprint = fingerprint = fingerprint_of(same)
        name, drained = node.name, node.drained
        if joined is not None:
            tokens.use_join(session, joined.join_id)
    if joined is not None:
        ctx.auth.remember(joined.credential)
    ctx.reports.written(name, same, fingerprint, drained)
    ctx.wake_scheduler()
    return RegisterResponse(node=name, heartbeat_interval_s=ctx.settings.nodes.heartbeat_interval_s)


# The heartbeat's body is read as JSON and compared with the last report before it is
# validated (``poold.telemetry``), so it is described here rather than declared.
_HEARTBEAT_BODY = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HeartbeatRequest"}}}}


@router.post(
    "/{node}/heartbeat", response_model=HeartbeatResponse, responses=responses(400, 404, 409, 413, 422),
    openapi_extra={"requestBody": _HEARTBEAT_BODY},
)
async def heartbeat(node: NodeNamePath, request: Request) -> Response:
    """A body of type ``HeartbeatRequest``, with the node's credential. Written to the store
    only when it says something new (``poold.telemetry``): a report that repeats the last one
    but for usage is answered from memory on the event loop, without being validated again; a
    new one is validated and written in a worker thread. (Thousands of nodes send these: the
    token is checked here rather than through a dependency, the answer is written here, not
    through the response model, and the context is taken from the app directly.)"""
    await node_agent(request, node)
    ctx: AppContext = request.app.state.ctx
    raw = parse_json(await request.body())
    drained = ctx.reports.answer_from_memory(node, raw)
    if drained is None:
        body = validate_body(HeartbeatRequest, raw)
        _check_devices(ctx, body.devices)
        drained = await run_in_threadpool(_write_heartbeat, ctx, node, body, raw)
    return Response(content=_HEARTBEAT_ANSWERS[drained], media_type="application/json")


_HEARTBEAT_ANSWERS = {drained: HeartbeatResponse(drained=drained).model_dump_json().encode() for drained in (False, True)}


def _check_devices(ctx: AppContext, devices: list) -> None:
    limit = ctx.settings.limits.devices_per_node
    if len(devices) > limit:
        raise TooLarge(f"{len(devices)} devices on one node; at most {limit} (limits.devices_per_node)", field="devices")


def _write_heartbeat(ctx: AppContext, node: str, body: HeartbeatRequest, raw: dict) -> bool:
    with transaction(ctx.factory) as session:
        row = recovery.heartbeat(session, node, body.host, body.devices, body.running_jobs, body.machine_id, ctx.settings.nodes)
        drained = row.drained
        # While a running job is missing from the agent's list, every heartbeat is written (by
        # every replica: the stored fingerprint is cleared): one of them loses the job once its
        # grace is over.
        settling = jobs.unreported_on(session, row.id)
        fingerprint = fingerprint_of(raw)
        row.report_fingerprint = None if settling else fingerprint
    if not settling:
        ctx.reports.written(node, raw, fingerprint, drained)
    else:
        ctx.reports.forget(node)
    return drained


@router.get("/{node}/assignments", response_model=AssignmentsResponse, responses=responses(404, 409, 422))
def assignments(
    node: NodeNamePath,
    _who: NodeAgent,
    machine_id: str | None = Query(default=None, max_length=200, description="as at register; another machine's is refused (409)"),
    ctx: AppContext = Depends(ctx_of),
) -> AssignmentsResponse:
    with reading(ctx.factory) as session:
        return jobs.assignments(session, node, machine_id)


@router.post("/{node}/events", response_model=JobEventsResponse, responses=responses(400, 404, 413, 422))
def job_events(node: NodeNamePath, body: JobEventsRequest, _who: NodeAgent, ctx: AppContext = Depends(ctx_of)) -> JobEventsResponse:
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
