"""Lost nodes: a node silent past ``nodes.timeout_s`` is ``lost``, and so are the jobs placed on it.

Each such job ends ``lost`` with what it held released, and is submitted again as a new job
while its job file's ``retries`` allow (``poold.services.jobs.lose``). The node is ``ready``
again with its next heartbeat; jobs its agent still runs that the daemon gave up on are on
that agent's kill list (``poold.services.jobs.assignments``).

Lock order, as everywhere: the jobs first, then the nodes (by id), each re-checked once locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from poold.db.models import JobModel, NodeModel
from poold.services import events, jobs


@dataclass
class LostNodes:
    """What one check found: the nodes now lost, the jobs lost with them, the retries submitted."""

    nodes: list[str] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)


def mark_silent_nodes_lost(session: Session, timeout_s: float, now: datetime | None = None) -> LostNodes:
    """Nodes ``ready`` whose last heartbeat is older than ``timeout_s`` become ``lost``; their
    placed jobs end ``lost`` and are submitted again as their ``retries`` allow."""
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(seconds=timeout_s)
    silent = (NodeModel.state == "ready", NodeModel.last_heartbeat_at < cutoff)
    candidates = list(session.scalars(select(NodeModel.id).where(*silent)))
    found = LostNodes()
    if not candidates:
        return found
    held = session.scalars(
        select(JobModel)
        .where(JobModel.node_id.in_(candidates), JobModel.state.in_(jobs.ACTIVE_STATES))
        .order_by(JobModel.id)
        .options(selectinload(JobModel.allocations))
        .with_for_update()
    ).all()
    # A heartbeat may have come in since the first look: only nodes still silent once locked.
    lost = session.scalars(select(NodeModel).where(NodeModel.id.in_(candidates), *silent).order_by(NodeModel.id).with_for_update()).all()
    names = {node.id: node.name for node in lost}
    for node in lost:
        node.state = "lost"
        node.generation += 1
        events.record(session, "node.lost", f"node {node.name} is lost: no heartbeat for {timeout_s:.0f} s", node_id=node.id)
        found.nodes.append(node.name)
    for job in held:
        if job.node_id in names:
            retry = jobs.lose(session, job, f"node {names[job.node_id]} was lost while the job was {job.state}")
            found.jobs.append(job.id)
            if retry is not None:
                found.retries.append(retry.id)
    return found
