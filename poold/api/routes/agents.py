"""Routes the node agents call: register, heartbeat, assignments, job events."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from poold import __version__
from poold.api.context import AppContext
from poold.api.errors import responses
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
from poold.db.session import transaction
from poold.services import jobs, nodes

router = APIRouter(prefix="/agents", tags=["agents"])


@router.post("/register", response_model=RegisterResponse, responses=responses(400, 422))
def register(body: RegisterRequest, ctx: AppContext = Depends(ctx_of)) -> RegisterResponse:
    nodes.check_protocol(body.protocol_version)
    with transaction(ctx.factory) as session:
        node = nodes.register(session, body.node, body.host, body.devices, body.agent_version or __version__)
        name = node.name
    ctx.wake_scheduler()
    return RegisterResponse(node=name, heartbeat_interval_s=ctx.settings.nodes.heartbeat_interval_s)


@router.post("/{node}/heartbeat", response_model=HeartbeatResponse, responses=responses(400, 404, 422))
def heartbeat(node: NodeNamePath, body: HeartbeatRequest, ctx: AppContext = Depends(ctx_of)) -> HeartbeatResponse:
    with transaction(ctx.factory) as session:
        row = nodes.heartbeat(session, node, body.host, body.devices)
        drained = row.drained
    return HeartbeatResponse(drained=drained)


@router.get("/{node}/assignments", response_model=AssignmentsResponse, responses=responses(404, 422))
def assignments(node: NodeNamePath, ctx: AppContext = Depends(ctx_of)) -> AssignmentsResponse:
    with transaction(ctx.factory) as session:
        return jobs.assignments(session, node)


@router.post("/{node}/events", response_model=JobEventsResponse, responses=responses(400, 404, 422))
def job_events(node: NodeNamePath, body: JobEventsRequest, ctx: AppContext = Depends(ctx_of)) -> JobEventsResponse:
    results = []
    for event in body.events:
        # One transaction per event: a refused report never undoes an accepted one.
        with transaction(ctx.factory) as session:
            results.append(jobs.apply_event(session, node, event))
    if any(r.accepted and r.kind == "ended" for r in results):
        ctx.wake_scheduler()
    return JobEventsResponse(results=results)
