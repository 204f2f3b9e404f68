"""Queues: seeded from the config file, changed by admins through ``poold queue``.

The rule between the two: at each start the daemon writes every queue the config file
names into the store, unless an admin has changed that queue through the API since
(``changed_by``/``changed_at`` set): from then on the store is the truth for it, and the
file's entry for it is ignored (the start logs it). ``poold queue set NAME --from-config``
hands a queue back to the file. Queues created through the API live in the store alone;
queues no longer in the file stay (jobs refer to them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from poold.db.models import DeviceModel, JobModel, QueueModel, utcnow
from poold.entitlements import KeyProblem, checked_keys, limit_below_guarantee, unknown_keys
from poold.services import Conflict, Invalid, NotFound, events
from poold.settings import QueueSettings, Settings

log = logging.getLogger(__name__)


def sync_queues(session: Session, settings: Settings) -> None:
    """Write each configured queue into the store, as the module's rule says."""
    for name, queue in settings.queues.items():
        row = session.get(QueueModel, name)
        if row is None:
            row = QueueModel(name=name)
            session.add(row)
        elif row.changed_by is not None:
            if _differs(row, queue):
                log.info("queue %s: kept as %s set it at %s; its entry in the config file is not applied", name, row.changed_by, row.changed_at)
            continue
        _seed(row, queue)


def _seed(row: QueueModel, queue: QueueSettings) -> None:
    row.priority, row.description = queue.priority, queue.description
    row.weight, row.guarantees, row.limits = queue.weight, dict(queue.guarantee), dict(queue.limit)


def _differs(row: QueueModel, queue: QueueSettings) -> bool:
    return (row.priority, row.description, row.weight, row.guarantees, row.limits) != (
        queue.priority, queue.description, queue.weight, queue.guarantee, queue.limit)


def get_queue(session: Session, name: str, *, lock: bool = False) -> QueueModel:
    query = select(QueueModel).where(QueueModel.name == name)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"no queue named {name!r}")
    return row


def list_queues(session: Session) -> list[QueueModel]:
    return list(session.scalars(select(QueueModel).order_by(QueueModel.priority.desc(), QueueModel.name)))


@dataclass
class QueueChange:
    """What an admin sets on a queue; None leaves a field as it is. In ``guarantee`` and
    ``limit`` a key set to None is removed; the other keys given are set, the rest kept."""

    priority: int | None = None
    description: str | None = None
    weight: float | None = None
    guarantee: dict[str, float | None] | None = None
    limit: dict[str, float | None] | None = None


def create_queue(session: Session, name: str, change: QueueChange, who: str, settings: Settings) -> QueueModel:
    """A new queue (409 if one has the name), its entitlement checked as :func:`update_queue` does."""
    if session.get(QueueModel, name) is not None:
        raise Conflict(f"queue {name!r} already exists", field="name")
    row = QueueModel(name=name, priority=0, description="", weight=1.0, guarantees={}, limits={})
    _apply(session, row, change, who, settings)
    session.add(row)
    return row


def update_queue(session: Session, name: str, change: QueueChange, who: str, settings: Settings) -> QueueModel:
    """Change a queue as ``who``: from then on the config file no longer reseeds it. Refused
    (422 naming the field) for a key that is no device model of the pool, nor a kind nor
    ``cost``; for a limit below the guarantee of the same key; the queue is left unchanged."""
    row = get_queue(session, name, lock=True)
    _apply(session, row, change, who, settings)
    return row


def reseed_queue(session: Session, name: str, settings: Settings) -> QueueModel:
    """Hand a queue back to the config file: its entry there is applied now and at each start."""
    queue = settings.queues.get(name)
    if queue is None:
        raise Conflict(f"queue {name!r} is not in the config file: nothing to take it from", field="name")
    row = get_queue(session, name, lock=True)
    _seed(row, queue)
    row.changed_by = row.changed_at = None
    _note(session, row, "handed back to the config file")
    return row


def delete_queue(session: Session, name: str, settings: Settings) -> None:
    """Delete a queue no job refers to (409 naming the queue otherwise); not one the config file names."""
    row = get_queue(session, name, lock=True)
    if name in settings.queues:
        raise Conflict(f"queue {name!r} is in the config file (queues.{name}): remove it there first", field="name")
    jobs = session.scalar(select(func.count()).select_from(JobModel).where(JobModel.queue_name == name))
    if jobs:
        raise Conflict(f"queue {name!r} is referred to by {jobs} job(s), ended ones included; it cannot be deleted", field="name")
    session.delete(row)
    events.record(session, "queue.deleted", f"queue {name} deleted", data={"queue": name})


def _apply(session: Session, row: QueueModel, change: QueueChange, who: str, settings: Settings) -> None:
    guarantee = _merged(row.guarantees, change.guarantee, "guarantee")
    limit = _merged(row.limits, change.limit, "limit")
    models = set(session.scalars(select(DeviceModel.model).distinct())) | set(settings.prices)
    for what, amounts in (("guarantee", guarantee), ("limit", limit)):
        if unknown := unknown_keys(amounts, models):
            raise Invalid(f"{unknown[0]!r} is no device model of the pool (known: {', '.join(sorted(models)) or 'none'}), "
                          "nor a kind (gpu, npu, fpga), nor 'cost'", field=f"{what}.{unknown[0]}")
    if (below := limit_below_guarantee(guarantee, limit)) is not None:
        key, cap, floor = below
        raise Invalid(f"limit.{key} = {cap:g} is below guarantee.{key} = {floor:g}", field=f"limit.{key}")
    weight = row.weight if change.weight is None else change.weight
    row.weight, row.guarantees, row.limits = weight, guarantee, limit
    if change.priority is not None:
        row.priority = change.priority
    if change.description is not None:
        row.description = change.description
    row.changed_by, row.changed_at = who, utcnow()
    _note(session, row, f"set by {who}")


def _note(session: Session, row: QueueModel, how: str) -> None:
    """The queue's entitlement as it now stands, in the event log."""
    events.record(session, "queue.changed", f"queue {row.name} {how}: priority {row.priority}, weight {row.weight:g}, "
                  f"guarantee {row.guarantees or {}}, limit {row.limits or {}}",
                  data={"queue": row.name, "weight": row.weight, "guarantee": row.guarantees, "limit": row.limits})


def _merged(current: dict[str, Any], change: dict[str, float | None] | None, what: str) -> dict[str, float]:
    if change is None:
        return dict(current)
    try:
        change = checked_keys(change, what)
    except KeyProblem as exc:
        raise Invalid(exc.message, field=exc.path) from None
    lowered = {key.lower() for key in change}
    merged = {key: amount for key, amount in current.items() if key.lower() not in lowered}
    merged.update({key: amount for key, amount in change.items() if amount is not None})
    return merged
