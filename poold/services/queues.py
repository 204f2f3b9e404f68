"""Queues come from the config; the table mirrors them so jobs can reference one."""

from __future__ import annotations

from sqlalchemy.orm import Session

from poold.db.models import QueueModel
from poold.settings import Settings


def sync_queues(session: Session, settings: Settings) -> None:
    """Create or update a row per configured queue. Queues no longer configured stay (jobs refer to them)."""
    for name, queue in settings.queues.items():
        row = session.get(QueueModel, name)
        if row is None:
            session.add(QueueModel(name=name, priority=queue.priority, description=queue.description))
        else:
            row.priority, row.description = queue.priority, queue.description
