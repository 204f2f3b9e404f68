"""The event log, newest first: what happened to jobs, nodes and devices (anyone may read it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from poold.api import convert
from poold.api.auth import Person
from poold.api.context import AppContext
from poold.api.errors import responses
from poold.api.retry import RetryingRoute
from poold.api.routes import ctx_of
from poold.api.schemas import EventOut
from poold.db.session import reading
from poold.services import events
from poold_wire.bounds import INT64_MAX
from poold_wire.messages import NODE_NAME_PATTERN

router = APIRouter(tags=["events"], route_class=RetryingRoute)


@router.get("/events", response_model=list[EventOut], responses=responses(404, 422))
def list_events(
    _who: Person,
    limit: int = Query(default=50, ge=1, le=500, description="events to return, the latest"),
    job: int | None = Query(default=None, ge=1, le=INT64_MAX, description="only this job's events"),
    node: str | None = Query(default=None, min_length=1, max_length=200, pattern=NODE_NAME_PATTERN, description="only this node's events"),
    kind: str | None = Query(default=None, max_length=50, pattern=events.KIND_PATTERN,
                             description="only events of this kind (job.waiting), or of this family without a dot (job)"),
    ctx: AppContext = Depends(ctx_of),
) -> list[EventOut]:
    """The recent event log, newest first. Like a job's summary, nothing here is one user's
    alone: events carry no job's environment."""
    with reading(ctx.factory) as session:
        logged = events.recent(session, limit, job_id=job, node=node, kind=kind)
        names = convert.node_names(session, (event.node_id for event in logged))
        return [convert.event_out(event, names) for event in logged]
