"""A scheduling pass: bring the pool up to date, let the sharing planner decide, commit in batches.

The :class:`Scheduler` lives as long as the daemon: its columnar pool, the engine's caches,
the job mix, the parsed requests and the planner's reservations carry over from pass to
pass. A pass

1. reloads the nodes whose store generation moved (``snapshot``);
2. counts jobs it has not seen before into the job mix;
3. reads the queues' entitlements, the pending jobs and the jobs holding devices (who is
   stopping, when each ends at the latest, what it costs);
4. lets the planner (``poold.scheduler.sharing``) decide: queues under their guarantee
   first, then weighted fair share over cost, priority then age within a queue; EASY
   backfill around the reservations of each queue's head; victims to preempt; why each
   other job waits. At most ``scheduler.max_jobs_per_pass`` jobs are asked of the engine a
   pass; jobs whose request already failed this pass cost none, so a block of jobs that
   cannot be placed never starves the ones behind it;
5. commits placements in batches of ``scheduler.batch_size`` (``poold.scheduler.commit``);
   a placement that lost a race is given back to the pool and its job decided next pass;
6. asks the victims' agents to stop them (``poold.services.preemption``);
7. stores why each job still waits.

Passes run on the replica holding the leader lock (``poold.background``); a replica taking
over starts with no reservations and makes them again in its first pass. Even so, the commit
re-checks everything under lock.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from poold.db.ids import among
from poold.db.models import EventModel, JobModel, QueueModel, utcnow
from poold.db.session import is_retryable, transaction
from poold.scheduler.commit import DeviceClaim, GangProposal, NodeHeld, Proposal, commit, parts_of
from poold.scheduler.engine import Engine, Placement
from poold.scheduler.framework import EngineOptions
from poold.scheduler.mix import JobMix
from poold.scheduler.reasons import reason_kind
from poold.scheduler.request import PlacementRequest
from poold.scheduler.scorers.fragmentation import fragmentation_by_model
from poold.scheduler.sharing import Holder, PassPlan, Planner, Preemption, QueueEntitlement, SharingOptions, Waiting
from poold.scheduler.snapshot import StoreSnapshot
from poold.scheduler.stack import Stack, build_stack
from poold.services import ServiceError, events, preemption
from poold.services.jobs import ACTIVE_STATES
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


def sharing_options(settings: Settings) -> SharingOptions:
    scheduler = settings.scheduler
    return SharingOptions(grace_s=scheduler.preempt_grace_max_s, max_decisions=scheduler.max_jobs_per_pass)


class PassObserver(Protocol):
    """What watches the passes (the daemon's metrics, ``poold.metrics``): a pass that took
    ``duration_s`` seconds and committed ``placed`` placements; a job placed ``waited_s``
    seconds after its submit."""

    def pass_ran(self, duration_s: float, placed: int) -> None: ...
    def job_placed(self, waited_s: float) -> None: ...


# A pending job's request is parsed once (``Scheduler.request_of``) and filled in afterwards.
NO_REQUEST = PlacementRequest(job_id=0, count=0, kinds=frozenset())


def _number(value: Any) -> float | None:
    """A number read out of a stored job file (a JSON value), or None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Scheduler:
    """The daemon's placement state and its pass; see the module docstring. ``lock`` guards
    the pool and engine: a pass holds it, and so do ``poold plan`` requests."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, stack: Stack | None = None, seed: int | None = None):
        self.factory, self.settings = factory, settings
        self.snapshot = StoreSnapshot(settings)
        self.mix = JobMix(half_life_jobs=settings.scheduler.mix_half_life_jobs)
        self.engine = Engine(self.snapshot.pool, stack or build_stack(), engine_options(settings, seed), self.mix)
        self.planner = Planner(self.engine, {}, sharing_options(settings))
        self.last_plan = PassPlan()  # the last pass's, less its placements (committed by then)
        # The pool's layout when ``last_plan`` was made: its reservations name device slots of it.
        self.last_plan_layout = self.engine.pool.layout
        self.lock = threading.RLock()
        self._requests: dict[int, PlacementRequest] = {}
        self._terms: dict[int, tuple[float | None, bool]] = {}
        # The last pass's holders, with the job's ``preemptions`` count when read (``_holders``).
        self._holding: dict[int, tuple[int, Holder]] = {}
        self._passes = 0
        self._mix_watermark: int | None = None
        # What was said about culprits set aside (nodes that cannot be read, jobs the engine
        # failed on), so each is said once, not every pass.
        self._said_nodes: dict[int, tuple[str, str]] = {}
        self._said_jobs: dict[int, str] = {}
        self.observer: PassObserver | None = None

    @property
    def passes(self) -> int:
        """How many passes this scheduler ran (``last_plan`` is the last one's)."""
        return self._passes

    def run_pass(self) -> PassResult:
        started = time.monotonic()
        with self.lock, _collector_paused():
            result = self._run_pass()
        if self.observer is not None:
            self.observer.pass_ran(time.monotonic() - started, len(result.placed))
        return result

    def fragmentation_by_model(self, wait_s: float = 1.0) -> dict[str, float] | None:
        """Per model, the share of free capacity the recent job mix cannot use, over the pool
        as the last pass left it (``scorers.fragmentation.fragmentation_by_model``); None on a
        daemon that has run no pass (a replica that is not the leader), or when a pass holds
        the pool longer than ``wait_s``."""
        if not self._passes or not self.lock.acquire(timeout=wait_s):
            return None
        try:
            return fragmentation_by_model(self.engine.ctx)
        finally:
            self.lock.release()

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
            self._sync_queues(session)
            pending, holders = self._pending(session), self._holders(session)
            for chunk in chunks([job.job_id for job in pending if job.job_id not in self._requests]):
                for job_id, spec in session.execute(select(JobModel.id, JobModel.spec).where(among(JobModel.id, chunk))):
                    try:
                        self.request_of(job_id, spec)
                    except UnreadableJob as exc:
                        unreadable[job_id] = exc.why
        self._set_aside(unreadable)
        waiting = [replace(job, request=self._requests[job.job_id]) for job in pending if job.job_id not in unreadable]
        self._forget({job.job_id for job in waiting}, {holder.job_id for holder in holders})
        # The placements stay held in the pool as the planner decided them; any not committed
        # below is released.
        plan = self.planner.plan(utcnow().timestamp(), waiting, holders, keep=True)
        # Kept without its placements: they are committed below, and kept they would hold every
        # decision's objects (candidates, score breakdowns) until the next pass.
        self.last_plan, self.last_plan_layout = replace(plan, placements=[]), self.engine.pool.layout
        placements, size, done = plan.placements, self.settings.scheduler.batch_size, 0
        try:
            reasons = dict(plan.waiting)
            for job_id, exc in plan.failed.items():
                reasons[job_id] = self._engine_failed(job_id, exc)
            for start in range(0, len(placements), size):
                batch = [(placement, self._proposal(placement)) for placement in placements[start : start + size]]
                self._commit(batch, result)
                done = start + len(batch)
        except BaseException:
            for placement in placements[done:]:  # decided and held in the pool, not committed
                self.engine.pool.release(placement.request.job_id)
            raise
        if self.observer is not None and result.placed:
            self._observe_placed(result.placed, waiting)
        self._preempt(plan.preemptions)
        result.waiting = list(reasons)
        self._record_waiting(reasons)
        return result

    def _observe_placed(self, placed: list[int], waiting: list[Waiting]) -> None:
        """Tell the observer how long each job just placed waited since its submit."""
        now, submitted_s = utcnow().timestamp(), {job.job_id: job.submitted_s for job in waiting}
        for job_id in placed:
            if job_id in submitted_s:
                self.observer.job_placed(max(0.0, now - submitted_s[job_id]))  # type: ignore[union-attr]

    def _sync_queues(self, session: Session) -> None:
        """The planner's queues as the store has them (admins change them through the API)."""
        rows = session.execute(select(QueueModel.name, QueueModel.priority, QueueModel.weight, QueueModel.guarantees, QueueModel.limits))
        self.planner.queues = {
            name: QueueEntitlement(name, priority, weight, dict(guarantees or {}), dict(limits or {}))
            for name, priority, weight, guarantees, limits in rows
        }

    def _preempt(self, preemptions: list[Preemption]) -> None:
        """Ask the victims' agents to stop them; one that cannot be (it ended meanwhile) is passed over."""
        for chosen in preemptions:
            try:
                with transaction(self.factory) as session:
                    preemption.preempt(session, chosen.victim_job_id, chosen.for_job_id, chosen.reason,
                                       self.settings.scheduler.preempt_grace_max_s)
            except ServiceError as exc:
                log.info("job %d was not preempted for job %d: %s", chosen.victim_job_id, chosen.for_job_id, exc)
            except Exception:  # noqa: BLE001 - one victim must not stop the others; the next pass decides again
                log.exception("job %d could not be preempted for job %d", chosen.victim_job_id, chosen.for_job_id)

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

    def _pending(self, session: Session) -> list[Waiting]:
        """The jobs waiting to be placed, as the planner reads them (their requests are filled
        in once parsed): it orders them (``poold.scheduler.sharing``)."""
        rows = session.execute(
            select(JobModel.id, JobModel.queue_name, JobModel.priority, JobModel.submitted_at)
            .where(JobModel.state == "pending", JobModel.cancel_requested.is_(False))
        ).all()
        terms = self._terms_of(session, [row[0] for row in rows])
        return [
            Waiting(job_id, queue, priority, submitted.timestamp(), NO_REQUEST, *terms[job_id])
            for job_id, queue, priority, submitted in rows
        ]

    def _holders(self, session: Session) -> list[Holder]:
        """The jobs holding devices, as the planner reads them: who may be preempted, who is
        stopping already, when each ends at the latest.

        Who holds devices is read every pass, and with it only what can change while a job
        holds them: whether it was asked to stop, and for whom. The rest of a holder (queue,
        priority, when it was placed, its price, its job file's terms) is fixed once a job is
        placed (until it is preempted and placed again: its ``preemptions`` count tells), so
        it is read once per placement: a pass over a pool running tens of thousands of jobs
        does not read and convert all their rows again."""
        rows = session.execute(
            select(JobModel.id, JobModel.preemptions, JobModel.preempt_requested_at.is_not(None), JobModel.cancel_requested,
                   JobModel.preempted_by)
            .where(JobModel.state.in_(ACTIVE_STATES), JobModel.placed_at.is_not(None), JobModel.gang_of.is_(None))
        ).all()
        known = self._holding
        self._read_holders(session, [job_id for job_id, preemptions, *_ in rows if known.get(job_id, (-1,))[0] != preemptions])
        holders: dict[int, tuple[int, Holder]] = {}
        for job_id, preemptions, asked, cancelling, by in rows:
            if job_id not in known:  # put back to pending between the two reads: not a holder now
                continue
            holder = known[job_id][1]
            stopping, preempted_for = bool(asked or cancelling), by if asked else None
            if holder.stopping != stopping or holder.preempted_for != preempted_for:
                holder = replace(holder, stopping=stopping, preempted_for=preempted_for)
            holders[job_id] = (preemptions, holder)
        self._holding = holders
        return [holder for _, holder in holders.values()]

    def _read_holders(self, session: Session, job_ids: list[int]) -> None:
        """Read into ``_holding`` the holders ``job_ids`` as placed (not stopping)."""
        for chunk in chunks(job_ids):
            rows = session.execute(
                select(JobModel.id, JobModel.preemptions, JobModel.queue_name, JobModel.priority, JobModel.placed_at,
                       JobModel.price_per_hour, JobModel.node_id)
                .where(among(JobModel.id, chunk), JobModel.placed_at.is_not(None))
            ).all()
            terms = self._terms_of(session, [row[0] for row in rows])
            # A gang is one holder, the job as submitted (no node of its own): its parts'
            # holdings are its own in the pool (``snapshot``), and its price their sum. It is
            # not a victim.
            for job_id, preemptions, queue, priority, placed, price, node in rows:
                holder = Holder(job_id, queue, priority, placed.timestamp(), *terms[job_id], price or 0.0, movable=node is not None)
                self._holding[job_id] = (preemptions, holder)

    def _terms_of(self, session: Session, job_ids: list[int]) -> dict[int, tuple[float | None, bool]]:
        """Each job's ``max_runtime`` and ``preemptible`` from its job file, read once per job
        (a job file never changes; a new job's are taken from its file when the job mix reads
        it): a pool with tens of thousands of jobs running does not read them all again every pass."""
        missing = [job_id for job_id in job_ids if job_id not in self._terms]
        for chunk in chunks(missing):
            query = select(JobModel.id, JobModel.spec["max_runtime"], JobModel.spec["preemptible"]).where(among(JobModel.id, chunk))
            for job_id, max_runtime, preemptible in session.execute(query):
                self._terms[job_id] = (_number(max_runtime), preemptible is not False)
        return {job_id: self._terms.get(job_id, (None, True)) for job_id in job_ids}

    def _forget(self, pending: set[int], holding: set[int]) -> None:
        """Drop parsed requests and job-file terms of jobs no longer pending or placed."""
        if len(self._requests) > 2 * max(len(pending), 1000):
            self._requests = {job_id: r for job_id, r in self._requests.items() if job_id in pending}
        if len(self._terms) > 2 * max(len(pending) + len(holding), 1000):
            self._terms = {job_id: t for job_id, t in self._terms.items() if job_id in pending or job_id in holding}

    def _observe_new_jobs(self, session: Session) -> None:
        """Count jobs submitted since the last pass (the most recent ones, on the first) into the mix."""
        query = select(JobModel.id, JobModel.spec)
        if self._mix_watermark is None:
            rows = list(session.execute(query.order_by(JobModel.id.desc()).limit(MIX_WARMUP_JOBS)))[::-1]
        else:
            rows = list(session.execute(query.where(JobModel.id > self._mix_watermark).order_by(JobModel.id).limit(50000)))
        for job_id, spec in rows:
            if isinstance(spec, dict):  # its terms as ``_terms_of`` reads them, while the file is here
                self._terms[job_id] = (_number(spec.get("max_runtime")), spec.get("preemptible") is not False)
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
                breakdown={"chosen": placement.summary(choice), "runners_up": []} if placement.parts else placement.breakdown(),
            ))
        if placement.parts:
            return GangProposal(request.job_id, tuple(parts), placement.price_per_hour, placement.reason, placement.breakdown())
        return parts[0]

    def _commit(self, batch: list[tuple[Placement, Proposal | GangProposal]], result: PassResult) -> None:
        """Commit ``batch``; a placement that lost its race is given back to the pool."""
        if not batch:
            return
        proposals = [proposal for _, proposal in batch]
        known = self._held_before(proposals)
        try:
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    written = commit(self.factory, proposals, self.settings.scheduler.count_outside_memory, known)
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
        self.snapshot.committed(written.generations)

    def _held_before(self, proposals: list[Proposal | GangProposal]) -> dict[int, NodeHeld]:
        """What the store holds on the batch's nodes as this pass knows it (``commit.NodeHeld``):
        the pool less the batch, each node at the store generation the snapshot holds it at
        (the commit uses it only if the node is still there). The pool also holds the pass's
        later batches, so the account can only be larger than the store's: a batch is checked
        as if they were held, and they fit with it, as the pass placed them all together."""
        pool, generations = self.engine.pool, self.snapshot.generations
        by_node: dict[int, list[Proposal]] = {}
        for proposal in proposals:
            for part in parts_of(proposal):
                by_node.setdefault(part.node_id, []).append(part)
        known: dict[int, NodeHeld] = {}
        for node_id, parts in by_node.items():
            slot = pool.node_by_id.get(node_id)
            if slot is None or node_id not in generations:
                continue
            claimed: dict[int, tuple[float, int]] = {}
            for part in parts:
                for claim in part.devices:
                    share, booked = claimed.get(claim.device_id, (0.0, 0))
                    claimed[claim.device_id] = (share + claim.share, booked + claim.memory_mib)
            devices = {}
            for device_id, (share, booked) in claimed.items():
                device = pool.device_by_id.get(device_id)
                if device is not None:  # else read from the store
                    devices[device_id] = (1.0 - float(pool.dev_free[device]) - share, int(pool.dev_mem_held[device]) - booked)
            known[node_id] = NodeHeld(
                generation=generations[node_id],
                cpu_cores=float(pool.node_cpu_held[slot]) - sum(part.cpu_cores for part in parts),
                host_memory_mib=int(pool.node_mem_held[slot]) - sum(part.host_memory_mib for part in parts),
                devices=devices,
            )
        return known

    def _record_waiting(self, reasons: dict[int, str]) -> None:
        """Store why each job waits, and write a ``job.waiting`` event only when the kind of
        reason changes, not when a count or a time inside it does (``reason_kind``): a job
        that waits an hour while devices come and go gets a handful of events, not one a pass.
        Only the reasons are read, and only the rows whose reason changed are written."""
        if not reasons:
            return
        with transaction(self.factory) as session:
            for chunk in chunks(list(reasons)):
                query = select(JobModel.id, JobModel.reason).where(among(JobModel.id, chunk), JobModel.state == "pending")
                stored = {job_id: reason for job_id, reason in session.execute(query)}
                changed = [job_id for job_id, reason in stored.items() if reason != reasons[job_id]]
                if not changed:
                    continue
                jobs = JobModel.__table__
                session.execute(
                    update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.state == "pending").values(reason=bindparam("why")),
                    [{"job_id": job_id, "why": reasons[job_id]} for job_id in changed],
                )
                now = utcnow()
                said = [job_id for job_id in changed if reason_kind(stored[job_id] or "") != reason_kind(reasons[job_id])]
                if said:
                    session.execute(EventModel.__table__.insert(), [
                        {"at": now, "kind": "job.waiting", "job_id": job_id, "node_id": None, "message": reasons[job_id], "data": {}}
                        for job_id in said
                    ])


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a pass, and run once after it.

    A pass makes tens of thousands of objects that live until it ends (decisions, proposals,
    rows), so the collector runs full collections in its middle, each one walking the whole
    heap of a large pool: about 1.5 s of a 10 s pass over 5,000 nodes and 10,000 jobs
    (``bench/placement.py scale``). The pass's objects are freed by reference counting as
    before; cycles wait for the young-generation collection at its end."""
    if not gc.isenabled():  # paused already (by another pass in this process, or by its owner)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)


def chunks(ids: list[int], size: int = 1000) -> list[list[int]]:
    """``ids`` in pieces small enough for one ``IN (...)`` on every store."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]
