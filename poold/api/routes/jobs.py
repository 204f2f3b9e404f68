"""Routes for users' jobs: submit, list, show, cancel, and logs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from poold.api import convert
from poold.api.auth import Person, node_agent
from poold.api.context import AppContext
from poold.api.errors import LogConflictOut, responses
from poold.api.retry import RetryingRoute
from poold.api.routes import JobIdPath, ctx_of
from poold.api.schemas import JobDetail, JobOut, JobState, PlanOut, SubmitRequest, WhyOut
from poold.db.session import reading, transaction
from poold.scheduler import plan as planning
from poold.scheduler.request import PlacementRequest
from poold.services import Forbidden, TooLarge, access, events, gangs, jobs, logs, why
from poold_wire.bounds import INT64_MAX
from poold_wire.messages import NODE_NAME_PATTERN

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=RetryingRoute)


@router.post("", response_model=JobOut, status_code=201, responses=responses(400, 422))
async def submit(body: SubmitRequest, request: Request, who: Person) -> Response:
    """Submit a job owned by the caller. Answered as a ``JobOut`` (written here rather than
    through the response model: bursts of submits come thousands at a time). The job is judged
    and stored by the intake's writer thread with the others arriving now (``poold.api.intake``);
    the request awaits it on the event loop."""
    ctx: AppContext = request.app.state.ctx
    access.check_run_as(who, body.spec.user, ctx.settings.auth)
    out = await ctx.submits.submit(body.spec, who.user)
    ctx.wake_scheduler()
    return Response(content=out.model_dump_json(), status_code=201, media_type="application/json")


@router.post("/plan", response_model=PlanOut, responses=responses(400, 422))
def plan(body: SubmitRequest, _who: Person, ctx: AppContext = Depends(ctx_of)) -> PlanOut:
    """Where the job would go now, its cost per unit of work, the runner-up, and what each
    filter turned down; nothing is submitted."""
    return convert.plan_out(planning.plan(ctx.scheduler, ctx.capacity, PlacementRequest.from_spec(0, body.spec)))


@router.get("", response_model=list[JobOut], responses=responses(422))
def list_jobs(
    _who: Person, state: list[JobState] | None = Query(default=None), limit: int = Query(default=200, ge=1, le=10000),
    ctx: AppContext = Depends(ctx_of),
) -> list[JobOut]:
    """Every job's summary, whoever's (its environment is in ``GET /jobs/{id}``, for its owner)."""
    with reading(ctx.factory) as session:
        listed = jobs.list_jobs(session, list(state or []), limit)
        names = convert.node_names(session, convert.job_node_ids(listed))
        retries = jobs.requeued_as(session, [job.id for job in listed if job.state == "lost"])
        return [convert.job_out(job, names, requeued_as=retries) for job in listed]


@router.get("/{job_id}", response_model=JobDetail, responses=responses(404, 422))
def show(job_id: JobIdPath, who: Person, ctx: AppContext = Depends(ctx_of)) -> JobDetail:
    """The job with its file, allocations and events; its environment only for its owner and admins."""
    with reading(ctx.factory) as session:
        job, parts, logged = jobs.get_job(session, job_id), gangs.parts_of(session, job_id), events.for_job(session, job_id)
        names = convert.node_names(session, [*convert.job_node_ids([job, *parts]), *(event.node_id for event in logged)])
        return convert.job_detail(job, names, logged, jobs.requeued_as(session, [job_id]), show_env=access.owns(who, job), parts=parts)


@router.get("/{job_id}/why", response_model=WhyOut, responses=responses(404, 422))
def explain(job_id: JobIdPath, _who: Person, ctx: AppContext = Depends(ctx_of)) -> WhyOut:
    """Why the job waits (its place in its queue, its queue's usage, what each filter turns
    down now, its reservation and fallbacks), why it was placed where it was (the recorded
    scores beside the runners-up), or who preempted it. Anyone may ask about any job: like a
    job's summary, nothing here is its owner's alone (no environment)."""
    return convert.why_out(why.why(ctx.factory, ctx.scheduler, ctx.capacity, job_id), ctx.settings)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=responses(404, 409, 422))
def cancel(
    job_id: JobIdPath,
    who: Person,
    force: bool = Query(default=False, description="end the job now, in any state, and release its devices (administrators)"),
    ctx: AppContext = Depends(ctx_of),
) -> JobOut:
    """Cancel the caller's job (an admin: anyone's; by force: admins only)."""
    with transaction(ctx.factory) as session:
        access.check_cancel(who, jobs.get_job(session, job_id), force)
        job = jobs.cancel(session, job_id, force=force)
        out = convert.job_out(job, convert.node_names(session, convert.job_node_ids([job])))
    ctx.wake_scheduler()
    return out


_LOG_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.get(
    "/{job_id}/log", response_class=Response,
    responses={200: {"content": _LOG_BYTES, "description": "the log from offset on"}} | responses(404, 422),
)
def read_log(
    job_id: JobIdPath, who: Person, offset: int = Query(default=0, ge=0, le=INT64_MAX, description="bytes to skip"),
    ctx: AppContext = Depends(ctx_of),
) -> Response:
    """The job's output from ``offset`` on (its owner and admins)."""
    with reading(ctx.factory) as session:
        access.check_owner(who, jobs.get_job(session, job_id), "read the log of")
    return Response(content=logs.read(ctx.settings.state_dir, job_id, offset), media_type="application/octet-stream")


@router.put(
    "/{job_id}/log", responses=responses(404, 409, 413, 422, conflict=LogConflictOut),
    openapi_extra={"requestBody": {"required": True, "content": _LOG_BYTES}},
)
async def append_log(
    job_id: JobIdPath,
    request: Request,
    offset: int = Query(ge=0, le=INT64_MAX, description="bytes the log holds"),
    node: str = Query(min_length=1, max_length=200, pattern=NODE_NAME_PATTERN, description="the node running the job: only it may append"),
    ctx: AppContext = Depends(ctx_of),
) -> dict[str, int]:
    """Append a chunk the job's agent read from its output (with its node's credential); bounded
    by ``limits.log_chunk_bytes`` a request and ``limits.job_log_bytes`` a job. The store and
    the file are written in a worker thread, never on the event loop."""
    await node_agent(request, node)
    limit = ctx.settings.limits.log_chunk_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"a log chunk of {declared} bytes; at most {limit} a request (limits.log_chunk_bytes)", field="body")
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > limit:
            raise TooLarge(f"a log chunk of more than {limit} bytes (limits.log_chunk_bytes)", field="body")
    return {"size": await run_in_threadpool(_append_log, ctx, job_id, node, offset, bytes(data))}


def _append_log(ctx: AppContext, job_id: int, node: str, offset: int, data: bytes) -> int:
    with reading(ctx.factory) as session:
        job = jobs.get_job(session, job_id)
        runs_on = jobs.node_name_of(session, job)
    if runs_on != node:
        where = f"runs on {runs_on}" if runs_on else "was never placed"
        raise Forbidden(f"job {job_id} {where}: node {node} may not append to its log", field="node")
    return logs.append(ctx.settings.state_dir, job_id, offset, data, ctx.settings.limits.job_log_bytes)
