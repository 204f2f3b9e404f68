"""Submits stored together: many requests, one transaction (group commit).

Storing a job costs a transaction, and a transaction costs a commit (on PostgreSQL, a wait
for the write-ahead log to reach the disk) whatever it holds. When users submit in bursts,
:class:`SubmitQueue` stores every submit that arrived while the previous transaction was
being written in the next one: the request's worker thread hands its job over and waits for
the answer; one writer thread takes whatever is queued (up to ``MAX_BATCH``) and stores it
with ``poold.services.jobs.submit_many``. Each request still gets its own answer: its job,
or why it was refused. A transaction that fails as a whole fails every request in it (a
lost race is then retried by the route, ``poold.api.retry``).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from sqlalchemy.orm import Session, sessionmaker

from poold.api import convert
from poold.api.schemas import JobOut
from poold.db.session import transaction
from poold.jobspec import JobSpec
from poold.scheduler.framework import Rejections
from poold.services import ServiceError, jobs

log = logging.getLogger(__name__)

MAX_BATCH = 500


class SubmitQueue:
    def __init__(self, factory: sessionmaker[Session], never_fits_policy: str):
        self.factory, self.never_fits_policy = factory, never_fits_policy
        self._queue: queue.SimpleQueue[tuple[JobSpec, Rejections | None, str | None, Future]] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._start = threading.Lock()

    def submit(self, spec: JobSpec, never_fits: Rejections | None, owner: str | None = None) -> JobOut:
        """Store ``spec`` as a pending job of ``owner`` (in the next transaction) and return it;
        raises the refusal (``ServiceError``) or the store's error."""
        answer: Future[JobOut] = Future()
        self._queue.put((spec, never_fits, owner, answer))
        with self._start:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_forever, name="poold-submits", daemon=True)
                self._writer.start()
        return answer.result()

    def _write_forever(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[tuple[JobSpec, Rejections | None, str | None, Future]]) -> None:
        try:
            with transaction(self.factory) as session:
                stored = jobs.submit_many(session, [(spec, never_fits, owner) for spec, never_fits, owner, _ in batch], self.never_fits_policy)
                answers = [job if isinstance(job, ServiceError) else convert.job_out(job, {}) for job in stored]
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            log.info("a batch of %d submits failed: %s", len(batch), exc)
            for *_, answer in batch:
                answer.set_exception(exc)
            return
        for (*_, answer), outcome in zip(batch, answers):
            if isinstance(outcome, ServiceError):
                answer.set_exception(outcome)
            else:
                answer.set_result(outcome)
