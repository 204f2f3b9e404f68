"""Routes for the pool at a glance (by model) and its accounts (who used what, at what cost)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Depends, Query

from poold.api.auth import Person
from poold.api.context import AppContext
from poold.api.errors import responses
from poold.api.retry import RetryingRoute
from poold.api.routes import ctx_of
from poold.api.schemas import JobState, PoolOut, UsageOut, UsageRowOut
from poold.db.models import utcnow
from poold.db.session import reading
from poold.services import Invalid, accounting, overview

router = APIRouter(tags=["pool"], route_class=RetryingRoute)


@router.get("/pool", response_model=PoolOut, responses=responses())
def pool(_who: Person, ctx: AppContext = Depends(ctx_of)) -> PoolOut:
    """Per device model: total, in service, free, allocated, MIG slices by profile, fragmentation, utilisation, price."""
    fragmentation = ctx.scheduler.fragmentation_by_model()
    with reading(ctx.factory) as session:
        models = overview.pool_overview(session, ctx.settings, fragmentation=fragmentation, usage=ctx.reports)
    return PoolOut(at=utcnow(), models=[asdict(model) for model in models])


@router.get("/usage", response_model=UsageOut, responses=responses(422))
def usage(
    _who: Person,
    by: Literal["queue", "user", "model", "job"] = Query(default="queue", description="what the rows sum by"),
    since: str | None = Query(default=None, max_length=64, description="7d, 24h, 30m, 90s or an ISO 8601 time; default: all time"),
    state: list[JobState] | None = Query(default=None, description="only jobs in these states (repeatable)"),
    idle_below: float | None = Query(default=None, ge=0, le=100, description="only jobs whose mean device utilisation is below this (%)"),
    ctx: AppContext = Depends(ctx_of),
) -> UsageOut:
    """Device-hours by model, cost (price x time held) and mean utilisation, summed by queue,
    user, model or job, within the window."""
    now = utcnow()
    try:
        start = accounting.parse_since(since, now) if since is not None else None
    except ValueError as exc:
        raise Invalid(str(exc), field="since") from None
    with reading(ctx.factory) as session:
        jobs = accounting.job_usage(session, since=start, now=now, states=set(state) if state else None)
    if idle_below is not None:
        jobs = [job for job in jobs if job.utilization_pct is not None and job.utilization_pct < idle_below]
    if by == "job":
        rows = [UsageRowOut(key=str(job.job_id), jobs=1, **_public(job)) for job in jobs]
    else:
        rows = [UsageRowOut(**_public(row)) for row in accounting.summarise(jobs, by)]
    return UsageOut(by=by, since=start, at=now, rows=rows)


def _public(record: object) -> dict:
    fields = {key: value for key, value in asdict(record).items() if not key.startswith("_")}
    fields.pop("submitted_at", None)
    return fields
