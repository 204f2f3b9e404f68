"""Routes for queues: everyone may read them and their usage; admins create, change and delete them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Response

from poold.api import convert
from poold.api.auth import Admin, Person
from poold.api.context import AppContext
from poold.api.errors import responses
from poold.api.retry import RetryingRoute
from poold.api.routes import ctx_of
from poold.api.schemas import QUEUE_NAME_PATTERN, QueueCreate, QueueOut, QueueUpdate, QueueUsageOut
from poold.db.session import reading, transaction
from poold.services import Invalid, queue_usage, queues

router = APIRouter(prefix="/queues", tags=["queues"], route_class=RetryingRoute)

QueueNamePath = Path(min_length=1, max_length=100, pattern=QUEUE_NAME_PATTERN, description="the queue's name")


@router.get("", response_model=list[QueueUsageOut], responses=responses())
def list_queues(_who: Person, ctx: AppContext = Depends(ctx_of)) -> list[QueueUsageOut]:
    """Every queue, highest priority first: its entitlement, what its placed jobs hold, what waits."""
    with reading(ctx.factory) as session:
        return [convert.queue_usage_out(usage, ctx.settings) for usage in queue_usage.queue_usage(session)]


@router.get("/{name}", response_model=QueueOut, responses=responses(404, 422))
def show_queue(_who: Person, name: str = QueueNamePath, ctx: AppContext = Depends(ctx_of)) -> QueueOut:
    with reading(ctx.factory) as session:
        return convert.queue_out(queues.get_queue(session, name), ctx.settings)


@router.post("", response_model=QueueOut, status_code=201, responses=responses(400, 409, 422))
def create_queue(body: QueueCreate, who: Admin, ctx: AppContext = Depends(ctx_of)) -> QueueOut:
    change = queues.QueueChange(priority=body.priority, description=body.description, weight=body.weight,
                                guarantee=dict(body.guarantee), limit=dict(body.limit))
    with transaction(ctx.factory) as session:
        return convert.queue_out(queues.create_queue(session, body.name, change, str(who), ctx.settings), ctx.settings)


@router.patch("/{name}", response_model=QueueOut, responses=responses(400, 404, 409, 422))
def update_queue(body: QueueUpdate, who: Admin, name: str = QueueNamePath, ctx: AppContext = Depends(ctx_of)) -> QueueOut:
    """Change a queue; from then on the config file no longer reseeds it (``from_config`` hands it back)."""
    fields = body.model_dump(exclude_unset=True, exclude={"from_config"})
    with transaction(ctx.factory) as session:
        if body.from_config:
            if fields:
                raise Invalid(f"from_config takes no other field (given: {', '.join(sorted(fields))})", field="from_config")
            return convert.queue_out(queues.reseed_queue(session, name, ctx.settings), ctx.settings)
        row = queues.update_queue(session, name, queues.QueueChange(**fields), str(who), ctx.settings)
        return convert.queue_out(row, ctx.settings)


@router.delete("/{name}", status_code=204, response_class=Response, responses=responses(404, 409, 422))
def delete_queue(_who: Admin, name: str = QueueNamePath, ctx: AppContext = Depends(ctx_of)) -> Response:
    with transaction(ctx.factory) as session:
        queues.delete_queue(session, name, ctx.settings)
    return Response(status_code=204)
