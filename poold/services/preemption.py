"""Preemption: stop a placed job so that another can have its devices, and put it back to pending.

The flow, each step its own transaction:

1. :func:`preempt` marks the victim ``stopping``: ``preempt_requested_at`` set, with who takes
   its devices (``preempted_by``), why (``preempt_reason``) and its grace (``preempt_grace_s``:
   its job file's ``grace_period`` cut to ``scheduler.preempt_grace_max_s``). It keeps what it
   holds: a stopping job is not free capacity until its agent says it ended.
2. Its agent's assignments list it under ``stop`` (with the grace and the reason) and under
   ``cancel`` (for agents that predate ``stop``): SIGTERM, the grace, then SIGKILL. A victim
   still ``assigned`` gets the same: its agent may be starting it that moment, and only the
   agent can say it never will (it reports the job ended).
3. The agent's ``ended`` report (``cancelled``, as it was stopped) puts the job back to
   ``pending``: the same id, its allocations released (the node's generation moves),
   ``preemptions`` one more, events ``job.preempted`` and ``job.requeued``
   (``poold.services.jobs.requeue_preempted``). Placed again, it is the next ``run`` of the
   job for its agent, so a node that ran the earlier run starts it afresh and a late report
   of the earlier run is told apart.

The scheduling pass calls, for each ``Preemption`` its planner decides, in the pass's own
transaction (or one of its own, per victim)::

    preempt(session, p.victim_job_id, p.for_job_id, p.reason, settings.scheduler.preempt_grace_max_s)

and tells the planner, per placed job: ``stopping(job)`` (or :func:`stopping_ids`),
``job.preempted_by`` (the job it was preempted for, while stopping), :func:`preemptible` and
:func:`grace_of` (its grace, capped).

A job that ended by itself before the stop took effect (succeeded, failed, timed out) keeps
that end. A user's cancel during the stop wins: the job ends ``cancelled``. If the victim's
node is lost meanwhile, the lost-node path applies (``poold.services.recovery``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from poold.db.models import JobModel, utcnow
from poold.jobspec import DEFAULT_GRACE_PERIOD_S
from poold.services import Conflict, Invalid, events
from poold.services.jobs import ACTIVE_STATES, get_job
from poold.services.nodes import touch


def grace_of(job: JobModel, grace_s_cap: float) -> float:
    """Seconds between SIGTERM and SIGKILL when ``job`` is preempted: its ``grace_period``, at most ``grace_s_cap``."""
    return min(float(job.spec.get("grace_period", DEFAULT_GRACE_PERIOD_S)), grace_s_cap)


def preemptible(job: JobModel) -> bool:
    """The job file's ``preemptible`` (true for jobs from before the key); the policy honours a
    false one only while the job's queue is within its guarantee."""
    return bool(job.spec.get("preemptible", True))


def stopping(job: JobModel) -> bool:
    """Placed, with a preemption's stop asked of its agent: it still holds its devices, and is
    not preempted again."""
    return job.state in ACTIVE_STATES and job.preempt_requested_at is not None


def preempt(session: Session, victim_job_id: int, for_job_id: int, reason: str, grace_s_cap: float) -> None:
    """Ask the agent of placed job ``victim_job_id`` to stop it for ``for_job_id`` because
    ``reason``; see the module's docstring. Idempotent: a victim already stopping (for a
    preemption, or a user's cancel) is left as it is. A victim not placed is refused (409)."""
    if victim_job_id == for_job_id:
        raise Invalid(f"job {victim_job_id} cannot be preempted for itself", field="for_job_id")
    for_job = get_job(session, for_job_id)
    victim = get_job(session, victim_job_id, lock=True)
    if victim.state not in ACTIVE_STATES:
        raise Conflict(f"job {victim_job_id} is {victim.state}: only a placed job (assigned, running) can be preempted")
    if stopping(victim) or victim.cancel_requested:
        return
    grace = grace_of(victim, grace_s_cap)
    victim.preempt_requested_at = utcnow()
    victim.preempted_by, victim.preempt_reason, victim.preempt_grace_s = for_job.id, reason, grace
    victim.reason = f"being preempted for job {for_job.id} (queue {for_job.queue_name}); {reason}; stopping within {grace:g} s"
    if victim.node_id is not None:
        touch(session, [victim.node_id])  # what placement reads of the node changed: one of its jobs is stopping
    events.record(session, "job.preempt_requested",
                  f"its agent stops it for job {for_job.id} (queue {for_job.queue_name}): {reason}; SIGKILL after {grace:g} s",
                  job_id=victim.id, node_id=victim.node_id)


def stopping_ids(session: Session) -> list[int]:
    """Ids of the jobs now stopping (for a pass that must not count their devices free, nor pick them again)."""
    query = select(JobModel.id).where(JobModel.state.in_(ACTIVE_STATES), JobModel.preempt_requested_at.is_not(None))
    return list(session.scalars(query.order_by(JobModel.id)))
