"""The event log: one row per thing that happened to a job, node or device."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from poold.db.models import EventModel, NodeModel
from poold.services import NotFound

KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
"""An event kind (``job.waiting``, ``device.quarantined``), or its family (``job``)."""


def record(
    session: Session,
    kind: str,
    message: str,
    *,
    job_id: int | None = None,
    node_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> EventModel:
    event = EventModel(kind=kind, message=message, job_id=job_id, node_id=node_id, data=data or {})
    session.add(event)
    return event


def for_job(session: Session, job_id: int) -> list[EventModel]:
    return list(session.scalars(select(EventModel).where(EventModel.job_id == job_id).order_by(EventModel.id)))


def recent(
    session: Session, limit: int, *, job_id: int | None = None, node: str | None = None, kind: str | None = None
) -> list[EventModel]:
    """The latest ``limit`` events, newest first (by id: the order they were written in).

    ``kind`` is one kind (``job.waiting``) or, without a dot, a family (``job``: every
    ``job.*``). A ``node`` the pool does not know is a 404 naming it; a job that has no
    events (or does not exist) gives an empty list, as its events would after it was removed.
    """
    query = select(EventModel)
    if node is not None:
        node_id = session.scalar(select(NodeModel.id).where(NodeModel.name == node))
        if node_id is None:
            raise NotFound(f"no node named {node!r}", field="node")
        query = query.where(EventModel.node_id == node_id)
    if job_id is not None:
        query = query.where(EventModel.job_id == job_id)
    if kind is not None:
        query = query.where(EventModel.kind == kind if "." in kind else EventModel.kind.startswith(kind + ".", autoescape=True))
    return list(session.scalars(query.order_by(EventModel.id.desc()).limit(limit)))
