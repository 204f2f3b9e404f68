"""Submits stored together: many requests, one transaction (group commit).

Storing a job costs a transaction, and a transaction costs a commit (on PostgreSQL, a wait
for the write-ahead log to reach the disk) whatever it holds. When users submit in bursts,
:class:`SubmitQueue` stores every submit that arrived while the previous transaction was
being written in the next one: the request hands its job over and awaits the answer on the
event loop (no worker thread waits for it); one writer thread takes whatever is queued (up
to ``MAX_BATCH``), judges each job against the pool at its best (``Capacity.never_fits``:
one thread, so submits never queue for that view's lock) and stores them with
``poold.services.jobs.submit_many``. Each request still gets its own answer: its job, or why
it was refused. A transaction that fails as a whole fails every request in it (a lost race
is then retried by the route, ``poold.api.retry``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import defaultdict

from sqlalchemy.orm import Session, sessionmaker

from poold.api import convert
from poold.api.schemas import JobOut
from poold.db.session import transaction
from poold.jobspec import JobSpec
from poold.scheduler.framework import Rejections
from poold.scheduler.plan import Capacity
from poold.scheduler.request import PlacementRequest
from poold.services import ServiceError, jobs

log = logging.getLogger(__name__)

MAX_BATCH = 500

# One submit waiting in the queue: the job file, its owner, and where its answer goes.
Waiting = tuple[JobSpec, str | None, asyncio.AbstractEventLoop, asyncio.Future]


class SubmitQueue:
    def __init__(self, factory: sessionmaker[Session], never_fits_policy: str, capacity: Capacity):
        self.factory, self.never_fits_policy, self.capacity = factory, never_fits_policy, capacity
        self._queue: queue.SimpleQueue[Waiting] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._start = threading.Lock()

    async def submit(self, spec: JobSpec, owner: str | None = None) -> JobOut:
        """Store ``spec`` as a pending job of ``owner`` (in the next transaction) and return it;
        raises the refusal (``ServiceError``) or the store's error."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[JobOut] = loop.create_future()
        self._queue.put((spec, owner, loop, answer))
        with self._start:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_forever, name="poold-submits", daemon=True)
                self._writer.start()
        return await answer

    def _write_forever(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                outcomes = self._write(batch)
            except Exception as exc:  # noqa: BLE001 - every request waiting gets an answer, and the writer goes on
                log.exception("a batch of %d submits could not be written", len(batch))
                outcomes = [exc] * len(batch)
            _answer(batch, outcomes)

    def _write(self, batch: list[Waiting]) -> list[JobOut | BaseException]:
        """Each submit's answer: its stored job, its refusal, or the error that failed them all."""
        outcomes: list[JobOut | BaseException | None] = [None] * len(batch)
        judged: list[tuple[int, JobSpec, Rejections | None, str | None]] = []
        for n, (spec, owner, _, _) in enumerate(batch):
            try:
                verdict = self.capacity.never_fits(PlacementRequest.from_spec(0, spec))
            except Exception as exc:  # noqa: BLE001 - this submit's answer, not the batch's
                outcomes[n] = exc
                continue
            judged.append((n, spec, verdict.rejections if verdict else None, owner))
        try:
            with transaction(self.factory) as session:
                stored = jobs.submit_many(session, [(spec, never_fits, owner) for _, spec, never_fits, owner in judged], self.never_fits_policy)
                for (n, *_), job in zip(judged, stored):
                    outcomes[n] = job if isinstance(job, ServiceError) else convert.job_out(job, {})
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            log.info("a batch of %d submits failed: %s", len(batch), exc)
            return [outcome if isinstance(outcome, BaseException) else exc for outcome in outcomes]
        return outcomes  # type: ignore[return-value]


def _answer(batch: list[Waiting], outcomes: list[JobOut | BaseException]) -> None:
    """Hand each request its outcome on its own event loop (one wake-up per loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, JobOut | BaseException]]] = defaultdict(list)
    for (_, _, loop, answer), outcome in zip(batch, outcomes):
        by_loop[loop].append((answer, outcome))
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, answers)
        except RuntimeError:  # that loop is closed: nobody waits for these answers any more
            log.debug("%d submit answers dropped: their event loop is closed", len(answers))


def _settle(answers: list[tuple[asyncio.Future, JobOut | BaseException]]) -> None:
    for answer, outcome in answers:
        if answer.done():  # the request went away (its client hung up)
            continue
        if isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)
