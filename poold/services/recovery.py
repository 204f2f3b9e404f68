"""Lost nodes and returning agents.

A node silent past ``nodes.timeout_s`` is ``lost``, and so are the jobs placed on it: each
ends ``lost`` with what it held released, and is submitted again as a new job while its job
file's ``retries`` allow (``poold.services.jobs.lose``).

Each heartbeat reconciles both sides from the jobs the agent says it runs: a job the daemon
holds on the node as ``assigned`` that the agent runs is adopted (``running``); one it holds
as ``running`` that the agent stopped listing is lost once it has been missing for
``nodes.timeout_s`` (its ``ended`` report would have landed by then); and a job the agent
runs that the daemon gave up on (ended, lost, placed elsewhere, unknown) is on the agent's
kill list (``poold.services.jobs.assignments``). The node is ``ready`` again with its next
heartbeat.

Lock order, as everywhere: the jobs first, then the nodes (by id), then devices; what was
read before a lock is re-checked once it is held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from poold_wire.records import DeviceRecord, HostRecord
from poold.db.models import JobModel, NodeModel, as_utc, utcnow
from poold.services import events, gangs, jobs, nodes
from poold.settings import NodeSettings


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
    held = jobs.lock_placed(session, JobModel.node_id.in_(candidates))
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


def heartbeat(
    session: Session, name: str, host: HostRecord, devices: list[DeviceRecord], running_jobs: list[int],
    machine_id: str | None, settings: NodeSettings, now: datetime | None = None,
) -> NodeModel:
    """A heartbeat from ``name``'s agent: refused (409) from another machine than the node's;
    otherwise the node's jobs are reconciled with ``running_jobs`` (a job missing for
    ``settings.timeout_s`` is lost), then the node and its devices are refreshed."""
    now = now or utcnow()
    node = nodes.get_node(session, name)
    nodes.check_machine(node, machine_id)
    reconcile(session, node, running_jobs, settings.timeout_s, now)
    node = nodes.heartbeat(session, name, host, devices, running_jobs, settings, now)
    node.machine_id = node.machine_id or machine_id
    return node


def reconcile(session: Session, node: NodeModel, running_jobs: list[int], grace_s: float, now: datetime | None = None) -> None:
    """Adopt the jobs held on ``node`` that its agent runs; lose the running ones it has not
    listed for ``grace_s``. Jobs it runs that are not held there go on its kill list by
    themselves: assignments compare the node's ``running_jobs`` with what is held.

    Only jobs with something to change are locked (most heartbeats lock none), and each is
    looked at again once locked.
    """
    now = now or utcnow()
    reported = set(running_jobs)
    placed = session.execute(
        select(JobModel.id, JobModel.state, JobModel.unreported_since)
        .where(JobModel.node_id == node.id, JobModel.state.in_(jobs.ACTIVE_STATES))
    ).all()
    changing = [job_id for job_id, state, since in placed
                if (job_id in reported and (state == "assigned" or since is not None))
                or (job_id not in reported and state == "running")]
    if not changing:
        return
    for job in jobs.lock_placed(session, JobModel.id.in_(changing), JobModel.node_id == node.id):
        if job.id in reported:
            job.unreported_since = None
            if job.state == "assigned":  # its started report has not landed (or was refused)
                job.state, job.started_at = "running", job.started_at or now
                events.record(session, "job.started", f"adopted: the agent on {node.name} reports it running",
                              job_id=job.id, node_id=node.id)
                if job.gang_of is not None:
                    gangs.part_started(session, job)
        elif job.state == "running":
            if job.unreported_since is None:
                job.unreported_since = now
            elif (now - as_utc(job.unreported_since)).total_seconds() >= grace_s:
                jobs.lose(session, job, f"the agent on {node.name} no longer runs it (not in its heartbeats for {grace_s:.0f} s)")
