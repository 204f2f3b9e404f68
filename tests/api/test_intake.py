"""Submits arriving together are stored together: one transaction for many requests, each
answered with its own job or its own refusal, judged against the pool at its best by the
intake's writer thread."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, func, select

from poold.api.intake import SubmitQueue
from poold.db.models import JobModel
from poold.db.session import transaction
from poold.jobspec import JobSpec
from poold.scheduler.plan import Capacity
from poold.services import Invalid
from tests.builders import make_node


def _spec(name: str, queue: str = "default", **resources) -> JobSpec:
    return JobSpec.model_validate({"name": name, "command": ["true"], "queue": queue, "resources": resources or {"count": 0, "cpu_cores": 1}})


async def _submit_all(submits: SubmitQueue, specs: dict[str, JobSpec]) -> dict[str, object]:
    answers = await asyncio.gather(*(submits.submit(spec) for spec in specs.values()), return_exceptions=True)
    return dict(zip(specs, answers))


def test_a_burst_of_submits_takes_fewer_transactions_than_submits_and_each_gets_its_answer(pool, settings):
    """40 submits at once, one naming a queue that does not exist and one asking for an A100
    the pool has none of (refused: never fits); the other 38 are stored, in fewer transactions."""
    with transaction(pool.factory) as session:
        make_node("l4").gpus(2, "L4").register(session)
    commits = []
    event.listen(pool.engine, "commit", lambda conn: commits.append(1))
    submits = SubmitQueue(pool.factory, "refuse", Capacity(pool.factory, settings))
    specs = {f"job-{i}": _spec(f"job-{i}", "nowhere" if i == 7 else "default") for i in range(40)}
    specs["job-9"] = _spec("job-9", count=1, accept=[{"model": "A100"}])
    answers = asyncio.run(_submit_all(submits, specs))
    assert isinstance(answers["job-7"], Invalid) and answers["job-7"].field == "spec.queue"
    assert isinstance(answers["job-9"], Invalid) and "could hold this job even when idle" in str(answers["job-9"])
    stored = {name: out for name, out in answers.items() if name not in ("job-7", "job-9")}
    assert {out.name for out in stored.values()} == set(stored) and len({out.id for out in stored.values()}) == 38
    assert all(out.state == "pending" for out in stored.values())
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(JobModel)) == 38
    assert len(commits) < 38  # stored together, not one transaction each


def test_a_store_error_fails_every_submit_of_its_batch(pool, settings, monkeypatch):
    from poold.services import jobs

    def broken(*args, **kwargs):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(jobs, "submit_many", broken)
    submits = SubmitQueue(pool.factory, "refuse", Capacity(pool.factory, settings))
    answers = asyncio.run(_submit_all(submits, {"x": _spec("x"), "y": _spec("y")}))
    assert all(isinstance(answer, RuntimeError) and "went away" in str(answer) for answer in answers.values())


def test_a_request_that_went_away_does_not_stop_the_others(pool, settings):
    """A submit whose request was cancelled (its client hung up) is stored all the same; the
    writer goes on answering the others."""
    submits = SubmitQueue(pool.factory, "refuse", Capacity(pool.factory, settings))

    async def scenario() -> str:
        gone = asyncio.ensure_future(submits.submit(_spec("gone")))
        await asyncio.sleep(0)
        gone.cancel()
        return (await submits.submit(_spec("kept"))).name

    assert asyncio.run(scenario()) == "kept"
    with pool.factory() as session:
        assert sorted(session.scalars(select(JobModel.name))) == ["gone", "kept"]
    with pytest.raises(Invalid):
        asyncio.run(submits.submit(_spec("bad", "nowhere")))


def test_an_unexpected_error_in_the_writer_answers_its_batch_and_the_writer_goes_on(pool, settings, monkeypatch):
    submits = SubmitQueue(pool.factory, "refuse", Capacity(pool.factory, settings))
    write = submits._write
    failures = iter([RuntimeError("writer broke")])

    def once(batch):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return write(batch)

    monkeypatch.setattr(submits, "_write", once)
    with pytest.raises(RuntimeError, match="writer broke"):
        asyncio.run(submits.submit(_spec("first")))
    assert asyncio.run(submits.submit(_spec("second"))).name == "second"
