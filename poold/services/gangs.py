"""Gangs in the store: a job over several nodes, kept as its parts.

A gang is committed (``poold.scheduler.commit.write_gang``) as one job row per part, each
with ``gang_of`` naming the job as submitted, its ``gang_rank`` and its own node and
allocations: everything per node (assignments, agents' reports, lost nodes, kill lists,
scrubs) handles a part as it handles any job. The job as submitted holds nothing itself; its
state follows its parts:

- ``assigned`` once placed (every part at once), ``running`` once every part has started;
- ``succeeded`` once every part has succeeded;
- when one part ends ``failed``, ``timed_out`` or ``cancelled``, the others are stopped (a
  cancel request: their agents kill them, as for any cancel) and the gang ends with that
  outcome, its reason naming the part, its node and how it ended;
- when a part is lost (its node lost, or its agent no longer runs it), the others are
  stopped and the gang is lost: submitted again whole as a new job while its ``retries``
  allow (``poold.services.jobs.lose``), never part by part.

Lock order: the jobs of a gang are locked together, in id order (the gang first: its parts
are made after it), before nodes and devices, as everywhere.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from poold.db.models import JobModel, NodeModel
from poold.services import events, jobs

ACTIVE = jobs.ACTIVE_STATES
# MASTER_PORT of a gang whose job file sets none: this base plus the gang's id modulo the span,
# so that gangs sharing a rank-0 node rarely meet on one port.
MASTER_PORT_BASE = 29500
MASTER_PORT_SPAN = 1000


def master_port(gang_id: int) -> int:
    return MASTER_PORT_BASE + gang_id % MASTER_PORT_SPAN


def members(session: Session, job_id: int) -> list[int]:
    """Ids of the whole gang ``job_id`` belongs to (the gang and its parts), in id order; just
    ``[job_id]`` for a job of one node. Read without locks (a gang's membership never changes)."""
    gang_of = session.scalar(select(JobModel.gang_of).where(JobModel.id == job_id))
    gang = gang_of if gang_of is not None else job_id
    ids = session.scalars(select(JobModel.id).where(or_(JobModel.id == gang, JobModel.gang_of == gang)).order_by(JobModel.id)).all()
    return list(ids) or [job_id]


def lock_gang_of(session: Session, job_id: int) -> None:
    """Lock the whole gang ``job_id`` belongs to (the gang and its parts, in id order), before
    the job itself is locked; nothing for a job of one node."""
    ids = members(session, job_id)
    if len(ids) > 1:
        list(session.scalars(select(JobModel.id).where(JobModel.id.in_(ids)).order_by(JobModel.id).with_for_update()))


def lock_members(session: Session, job_ids: list[int]) -> None:
    """Lock the jobs ``job_ids`` and everything of their gangs, in id order."""
    gangs = set(session.scalars(select(JobModel.gang_of).where(JobModel.id.in_(job_ids), JobModel.gang_of.is_not(None))))
    gangs |= set(session.scalars(select(JobModel.gang_of).where(JobModel.gang_of.in_(job_ids))))
    ids = set(job_ids)
    if gangs:
        ids |= set(session.scalars(select(JobModel.id).where(or_(JobModel.id.in_(gangs), JobModel.gang_of.in_(gangs)))))
    list(session.scalars(select(JobModel.id).where(JobModel.id.in_(sorted(ids))).order_by(JobModel.id).with_for_update()))


def parts_of(session: Session, gang_id: int) -> list[JobModel]:
    """The parts of gang ``gang_id``, by rank (empty for a job that is no gang or not placed yet)."""
    return list(session.scalars(select(JobModel).where(JobModel.gang_of == gang_id).order_by(JobModel.gang_rank)))


def describe(session: Session, part: JobModel) -> str:
    """``part job 13 (rank 1) on node hgx-2``."""
    node = session.scalar(select(NodeModel.name).where(NodeModel.id == part.node_id)) if part.node_id is not None else None
    return f"part job {part.id} (rank {part.gang_rank})" + (f" on node {node}" if node else "")


def part_started(session: Session, part: JobModel) -> None:
    """A part runs: the gang runs once every part has started (a quick part may have ended
    meanwhile)."""
    gang = session.get(JobModel, part.gang_of)
    if gang is None or gang.state != "assigned":
        return
    parts = parts_of(session, gang.id)
    if all(p.state != "assigned" for p in parts):
        gang.state, gang.started_at = "running", part.started_at
        events.record(session, "job.started", f"every part of the gang runs ({len(parts)} nodes)", job_id=gang.id)


def part_ended(session: Session, part: JobModel) -> None:
    """A part ended (``part.state`` is its outcome): the gang follows (module docstring). A
    part lost is :func:`lose_part`'s."""
    gang = session.get(JobModel, part.gang_of)
    if gang is None or gang.state not in ACTIVE or part.state == "lost":
        return
    parts = parts_of(session, gang.id)
    if part.state == "succeeded":
        if all(p.state == "succeeded" for p in parts):
            gang.reason = f"every part succeeded ({len(parts)} nodes)"
            jobs._end(session, gang, "succeeded", 0, gang.reason)
        return
    code = f" (exit {part.exit_code})" if part.exit_code is not None else ""
    cause = f"{describe(session, part)} {part.state}{code}"
    if gang.cancel_requested and part.state == "cancelled":
        cause = "cancelled: its parts were stopped"
    stop_parts(session, gang, parts, cause)
    gang.reason = cause
    jobs._end(session, gang, part.state, part.exit_code, cause)


def lose_part(session: Session, part: JobModel, why: str) -> JobModel | None:
    """End ``part`` lost because ``why``; the gang is lost with it (its other parts stopped) and
    submitted again whole while its retries allow. Returns the gang's retry, if any."""
    part.reason = f"{why}; its gang job {part.gang_of} is lost with it"
    jobs._end(session, part, "lost", None, part.reason)
    gang = session.get(JobModel, part.gang_of)
    if gang is None or gang.state not in ACTIVE:
        return None
    cause = f"{describe(session, part)} was lost: {why}"
    stop_parts(session, gang, parts_of(session, gang.id), cause)
    return jobs.lose(session, gang, cause)


def stop_parts(session: Session, gang: JobModel, parts: list[JobModel], cause: str) -> None:
    """Ask the agents of the gang's parts still placed to stop them (their cancel path)."""
    for other in parts:
        if other.state in ACTIVE and not other.cancel_requested:
            other.cancel_requested = True
            events.record(session, "job.cancel_requested", f"stopped with its gang job {gang.id}: {cause}",
                          job_id=other.id, node_id=other.node_id)


def cancel(session: Session, gang: JobModel, *, force: bool) -> None:
    """Cancel a placed gang: every part is stopped by its agent, or with ``force`` ended at
    once (what they hold released; their agents kill them from the kill list)."""
    for part in parts_of(session, gang.id):
        if part.state not in ACTIVE:
            continue
        if force:
            part.reason = f"cancelled by force with its gang job {gang.id}"
            jobs._end(session, part, "cancelled", None, f"{part.reason}; its allocations are released")
        elif not part.cancel_requested:
            part.cancel_requested = True
            events.record(session, "job.cancel_requested", f"cancel requested with its gang job {gang.id}",
                          job_id=part.id, node_id=part.node_id)


def gang_of_assignment(session: Session, part: JobModel) -> dict:
    """What a part's agent needs to start it as one node of the gang: ``poold_wire``'s ``GangInfo``
    fields. Node addresses are the hostnames the nodes' agents report, in rank order."""
    parts = parts_of(session, part.gang_of)
    node_ids = [p.node_id for p in parts]
    hostnames = dict(session.execute(select(NodeModel.id, NodeModel.hostname).where(NodeModel.id.in_(node_ids))).all())
    devices = [sum(1 for a in p.allocations if a.device_id is not None) for p in parts]
    return {
        "job_id": part.gang_of,
        "rank": part.gang_rank,
        "nodes": [hostnames.get(node_id, "") for node_id in node_ids],
        "devices_per_node": devices,
        "master_port": master_port(part.gang_of),
    }
