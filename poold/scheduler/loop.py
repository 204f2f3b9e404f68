"""A scheduling pass: bring the pool up to date, place pending jobs in order, commit in batches.

The :class:`Scheduler` lives as long as the daemon: its columnar pool, the engine's caches,
the job mix and the parsed requests carry over from pass to pass. A pass

1. reloads the nodes whose store generation moved (``snapshot``);
2. counts jobs it has not seen before into the job mix;
3. takes pending jobs by queue priority and job priority; among equals, those tried least
   recently first (rotation);
4. decides each job on the pool as the earlier placements of this pass left it. A request
   signature that failed fails again at once, without a decision, until the pool gives
   capacity back (a release, a node that comes back, a device healthy again; the pool's
   ``gains``). At most ``scheduler.max_jobs_per_pass`` decisions are made a pass; jobs that
   share a failed signature cost none, so a block of jobs that cannot be placed never
   starves the ones behind it;
5. commits placements in batches of ``scheduler.batch_size`` (``poold.scheduler.commit``);
   a placement that lost a race is given back to the pool and its job tried next pass;
6. stores why each job still waits.

Several daemons can run passes on one PostgreSQL side by side: each seeds its engine
differently (ties go to different nodes), and the commit re-checks everything under lock.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from poold.db.models import JobModel, QueueModel, utcnow
from poold.db.session import is_retryable, transaction
from poold.scheduler.commit import DeviceClaim, GangProposal, Proposal, commit
from poold.scheduler.engine import Engine, Placement, Unplaceable
from poold.scheduler.framework import EngineOptions
from poold.scheduler.mix import JobMix
from poold.scheduler.request import PlacementRequest
from poold.scheduler.snapshot import StoreSnapshot
from poold.scheduler.stack import Stack, build_stack
from poold.services import events
from poold.settings import Settings

log = logging.getLogger(__name__)

# A batch that loses a race in the store (deadlock, serialization failure) is committed again
# this many times in all before the pass gives it back.
COMMIT_ATTEMPTS = 3

# Jobs counted into the job mix when a daemon starts: the most recent ones, whatever their state.
MIX_WARMUP_JOBS = 2000


class UnreadableJob(Exception):
    def __init__(self, job_id: int, why: str):
        super().__init__(f"job {job_id}: {why}")
        self.job_id, self.why = job_id, why


@dataclass
class PassResult:
    placed: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    lost_races: list[int] = field(default_factory=list)


def engine_options(settings: Settings, seed: int | None = None) -> EngineOptions:
    scheduler = settings.scheduler
    return EngineOptions(
        count_outside_memory=scheduler.count_outside_memory,
        cost_tolerance=scheduler.cost_tolerance,
        seed=seed if seed is not None else int.from_bytes(os.urandom(4), "little"),
    )


class Scheduler:
    """The daemon's placement state and its pass; see the module docstring. ``lock`` guards
    the pool and engine: a pass holds it, and so do ``poold plan`` requests."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, stack: Stack | None = None, seed: int | None = None):
        self.factory, self.settings = factory, settings
        self.snapshot = StoreSnapshot(settings)
        self.mix = JobMix(half_life_jobs=settings.scheduler.mix_half_life_jobs)
        self.engine = Engine(self.snapshot.pool, stack or build_stack(), engine_options(settings, seed), self.mix)
        self.lock = threading.RLock()
        self._requests: dict[int, PlacementRequest] = {}
        self._tried: dict[int, int] = {}
        # Signatures that failed, with the pool's ``gains`` then: they fail again, without a
        # decision, until something is given back.
        self._failed: dict[tuple, tuple[int, Unplaceable]] = {}
        self._passes = 0
        self._mix_watermark: int | None = None
        # What was said about culprits set aside (nodes that cannot be read, jobs the engine
        # failed on), so each is said once, not every pass.
        self._said_nodes: dict[int, tuple[str, str]] = {}
        self._said_jobs: dict[int, str] = {}

    def run_pass(self) -> PassResult:
        with self.lock:
            return self._run_pass()

    def refresh(self, session: Session) -> None:
        """Bring the pool and the job mix up to date with the store."""
        self.snapshot.refresh(session)
        self._observe_new_jobs(session)

    def request_of(self, job_id: int, spec: dict) -> PlacementRequest:
        """The placement request of a job, parsed once; ``UnreadableJob`` if its stored file
        cannot be read as one."""
        request = self._requests.get(job_id)
        if request is None:
            try:
                request = PlacementRequest.from_spec(job_id, spec)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with one stored row
                raise UnreadableJob(job_id, f"{exc.__class__.__name__}: {exc}") from exc
            self._requests[job_id] = request
        return request

    def _run_pass(self) -> PassResult:
        self._passes += 1
        result = PassResult()
        unreadable: dict[int, str] = {}
        with self.factory() as session:
            self.refresh(session)
            order = self._pending(session)
            for chunk in chunks([job_id for job_id in order if job_id not in self._requests]):
                for job_id, spec in session.execute(select(JobModel.id, JobModel.spec).where(JobModel.id.in_(chunk))):
                    try:
                        self.request_of(job_id, spec)
                    except UnreadableJob as exc:
                        unreadable[job_id] = exc.why
        self._set_aside(unreadable)
        order = [job_id for job_id in order if job_id not in unreadable]
        self._forget(set(order))
        pool = self.engine.pool
        batch: list[tuple[Placement, Proposal]] = []
        waiting: dict[int, str] = {}
        decisions = 0
        for job_id in order:
            request = self._requests[job_id]
            known = self._failed.get(request.signature)
            if known is not None and known[0] == pool.gains:
                decision: Placement | Unplaceable = known[1]  # nothing was given back since it failed
            else:
                if decisions >= self.settings.scheduler.max_jobs_per_pass:
                    break  # the rest wait for the next pass; rotation brings them forward
                decisions += 1
                try:
                    decision = self.engine.place(request)
                except Exception as exc:  # noqa: BLE001 - one job must not stop the pass
                    waiting[job_id] = self._engine_failed(job_id, exc)
                    self._tried[job_id] = self._passes
                    continue
            if isinstance(decision, Unplaceable):
                self._failed[request.signature] = (pool.gains, decision)
                waiting[job_id] = decision.reason
                self._tried[job_id] = self._passes
                continue
            self.engine.apply(decision)
            batch.append((decision, self._proposal(decision)))
            if len(batch) >= self.settings.scheduler.batch_size:
                self._commit(batch, result)
                batch = []
        self._commit(batch, result)
        result.waiting = list(waiting)
        self._record_waiting(waiting)
        return result

    def _engine_failed(self, job_id: int, exc: Exception) -> str:
        """The reason a job waits when the engine raised on it (logged and said once)."""
        reason = f"set aside: placement failed on this job ({exc.__class__.__name__}: {exc}); it is tried again each pass"
        if self._said_jobs.get(job_id) != reason:
            log.exception("placement of job %d failed; the pass goes on without it", job_id)
            self._said_jobs[job_id] = reason
            with transaction(self.factory) as session:
                events.record(session, "job.set_aside", reason, job_id=job_id)
        return reason

    def _set_aside(self, unreadable: dict[int, str]) -> None:
        """Say once which nodes the snapshot set aside, and fail jobs whose stored file cannot
        be read (they could never be placed)."""
        nodes = {node_id: said for node_id, said in self.snapshot.set_aside.items() if self._said_nodes.get(node_id) != said}
        if not nodes and not unreadable:
            return
        with transaction(self.factory) as session:
            for node_id, (name, why) in nodes.items():
                events.record(session, "node.set_aside", f"node {name} is out of placement: its rows cannot be read ({why})", node_id=node_id)
            for job in session.scalars(select(JobModel).where(JobModel.id.in_(list(unreadable)), JobModel.state == "pending").with_for_update()):
                reason = f"its stored job file cannot be read for placement ({unreadable[job.id]})"
                job.state, job.reason, job.ended_at = "failed", reason, utcnow()
                events.record(session, "job.set_aside", f"failed: {reason}", job_id=job.id)
        self._said_nodes = dict(self.snapshot.set_aside)

    def _pending(self, session: Session) -> list[int]:
        """Pending jobs in the order they are tried: queue priority, job priority, then the
        ones a pass tried least recently (never tried first), then age."""
        rows = session.execute(
            select(JobModel.id, QueueModel.priority, JobModel.priority)
            .join(QueueModel, QueueModel.name == JobModel.queue_name)
            .where(JobModel.state == "pending", JobModel.cancel_requested.is_(False))
        ).all()
        tried = self._tried
        rows.sort(key=lambda row: (-row[1], -row[2], tried.get(row[0], 0), row[0]))
        return [row[0] for row in rows]

    def _forget(self, pending: set[int]) -> None:
        """Drop parsed requests, rotation marks and failed signatures of jobs no longer pending."""
        if len(self._requests) > 2 * max(len(pending), 1000):
            self._requests = {job_id: r for job_id, r in self._requests.items() if job_id in pending}
            self._tried = {job_id: n for job_id, n in self._tried.items() if job_id in pending}
            signatures = {r.signature for r in self._requests.values()}
            self._failed = {sig: known for sig, known in self._failed.items() if sig in signatures}

    def _observe_new_jobs(self, session: Session) -> None:
        """Count jobs submitted since the last pass (the most recent ones, on the first) into the mix."""
        query = select(JobModel.id, JobModel.spec)
        if self._mix_watermark is None:
            rows = list(session.execute(query.order_by(JobModel.id.desc()).limit(MIX_WARMUP_JOBS)))[::-1]
        else:
            rows = list(session.execute(query.where(JobModel.id > self._mix_watermark).order_by(JobModel.id).limit(50000)))
        for job_id, spec in rows:
            try:
                self.mix.observe(self.request_of(job_id, spec))
            except UnreadableJob:
                continue  # a pending one is failed by the pass; others are history
        if rows:
            self._mix_watermark = rows[-1][0]
        elif self._mix_watermark is None:
            self._mix_watermark = 0

    def _proposal(self, placement: Placement) -> Proposal | GangProposal:
        pool, request = self.engine.pool, placement.request
        parts = []
        for choice, holding in zip(placement.choices, placement.holdings):
            needed = request.memory_needed(pool.dev_mem_total[list(holding.devices)]) if holding.devices else ()
            claims = tuple(
                DeviceClaim(int(pool.dev_id[slot]), request.share, memory, int(need), float(pool.dev_price[slot]) * request.share)
                for slot, memory, need in zip(holding.devices, holding.memory_mib, needed)
            )
            parts.append(Proposal(
                job_id=request.job_id,
                node_id=int(pool.node_id[choice.node]),
                node_name=pool.node_name[choice.node],
                devices=claims,
                cpu_cores=request.cpu_cores,
                host_memory_mib=request.host_memory_mib,
                price_per_hour=choice.price_per_hour,
                reason=placement.describe(choice) if placement.parts else placement.reason,
            ))
        if placement.parts:
            return GangProposal(request.job_id, tuple(parts), placement.price_per_hour, placement.reason)
        return parts[0]

    def _commit(self, batch: list[tuple[Placement, Proposal | GangProposal]], result: PassResult) -> None:
        """Commit ``batch``; a placement that lost its race is given back to the pool."""
        if not batch:
            return
        proposals = [proposal for _, proposal in batch]
        try:
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    written = commit(self.factory, proposals, self.settings.scheduler.count_outside_memory)
                    break
                except Exception as exc:
                    if not is_retryable(exc) or attempt + 1 == COMMIT_ATTEMPTS:
                        raise
                    log.info("a batch of %d placements lost a race in the store; committing it again", len(batch))
        except Exception:
            for placement, _ in batch:  # nothing was written: the pool must not keep them
                self.engine.pool.release(placement.request.job_id)
            raise
        result.placed.extend(written.placed)
        result.lost_races.extend(written.lost)
        for job_id in written.lost:
            self.engine.pool.release(job_id)
        for job_id in written.placed:
            self._tried.pop(job_id, None)
        self.snapshot.committed(written.generations)

    def _record_waiting(self, reasons: dict[int, str]) -> None:
        """Store why each job waits; an event only when the reason changes, so the log stays readable."""
        if not reasons:
            return
        with transaction(self.factory) as session:
            for chunk in chunks(list(reasons)):
                for job in session.scalars(select(JobModel).where(JobModel.id.in_(chunk), JobModel.state == "pending")):
                    if job.reason != reasons[job.id]:
                        job.reason = reasons[job.id]
                        events.record(session, "job.waiting", reasons[job.id], job_id=job.id)


def chunks(ids: list[int], size: int = 1000) -> list[list[int]]:
    """``ids`` in pieces small enough for one ``IN (...)`` on every store."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]
