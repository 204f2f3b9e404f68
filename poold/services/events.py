"""The event log: one row per thing that happened to a job, node or device."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from poold.db.models import EventModel


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
