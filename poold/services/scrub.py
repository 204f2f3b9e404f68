"""Device scrub: a device is out of placement from its job's end until its agent has scrubbed it.

The agent's ``ended`` event lists the devices it scrubs (``scrubbing``); they turn
``scrubbing`` in the same transaction that releases the job's allocations, so no placement
can reach them in between. Its ``scrubbed`` event says how each went: a scrubbed device is
back in placement, and one whose scrub failed is quarantined until an administrator returns
it (``poold devices return``), since the last job's data may still be on it. Order:
job ended -> devices scrubbing -> scrubbed -> free (or quarantined).

A device another job holds by then (one a forced cancel or a lost node released early) is
not marked: placement has already moved on, and the agent does not scrub a device a running
job uses. Placement reads a scrubbing device as out of service
(``poold.scheduler.snapshot``), the commit re-check refuses it, and marking and clearing move
the node's generation.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from poold.db.models import AllocationModel, DeviceModel, JobModel, NodeModel, as_utc, utcnow
from poold.services import events, quarantine
from poold.services.nodes import touch
from poold_wire.messages import DeviceScrub


def _devices(session: Session, node: NodeModel, uuids: list[str]) -> list[DeviceModel]:
    if not uuids:
        return []
    query = select(DeviceModel).where(DeviceModel.node_id == node.id, DeviceModel.uuid.in_(sorted(set(uuids))))
    return list(session.scalars(query.order_by(DeviceModel.id).with_for_update()))


def begin(session: Session, node: NodeModel, job: JobModel, uuids: list[str], now: datetime | None = None) -> None:
    """The agent scrubs ``uuids`` (devices of ``job`` on ``node``) now: out of placement until it says how it went."""
    now = now or utcnow()
    devices = _devices(session, node, uuids)
    held = set(session.scalars(select(AllocationModel.device_id).where(
        AllocationModel.device_id.in_([d.id for d in devices]), AllocationModel.released_at.is_(None))))
    marked = False
    for device in devices:
        if device.id in held:
            continue
        device.scrubbing_since, device.scrub_job_id = now, job.id
        events.record(session, "device.scrubbing", f"{device.model} {device.uuid} is being scrubbed after job {job.id}",
                      job_id=job.id, node_id=node.id)
        marked = True
    if marked:
        touch(session, [node.id])


def finish(session: Session, node: NodeModel, job: JobModel, results: list[DeviceScrub], now: datetime | None = None) -> None:
    """The agent scrubbed ``job``'s devices: each is back in placement, or quarantined if its scrub failed."""
    now = now or utcnow()
    errors = {result.uuid: result.error for result in results}
    changed = False
    for device in _devices(session, node, list(errors)):
        error = errors[device.uuid]
        if device.scrub_job_id == job.id:
            device.scrubbing_since = device.scrub_job_id = None
            changed = True
        if error is None:
            events.record(session, "device.scrubbed", f"{device.model} {device.uuid} scrubbed after job {job.id}",
                          job_id=job.id, node_id=node.id)
        elif device.quarantine_reason != _reason(error):
            quarantine.hold(session, device, _reason(error), now)
            events.record(session, "device.scrub_failed", f"{device.model} {device.uuid}: scrub after job {job.id} failed: {error}",
                          job_id=job.id, node_id=node.id)
            changed = True
    if changed:
        touch(session, [node.id])


def _reason(error: str) -> str:
    return f"scrub failed: {error}"


def placement_note(device: DeviceModel) -> str | None:
    """Why placement must not use a device being scrubbed, or None when it is not."""
    if device.scrubbing_since is None:
        return None
    return f"being scrubbed after job {device.scrub_job_id} since {as_utc(device.scrubbing_since):%Y-%m-%d %H:%M:%S} UTC"
