"""Submits arriving together are stored together: one transaction for many requests, each
answered with its own job or its own refusal."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, func, select

from poold.api.intake import SubmitQueue
from poold.db.models import JobModel
from poold.jobspec import JobSpec
from poold.services import Invalid


def _spec(name: str, queue: str = "default") -> JobSpec:
    return JobSpec.model_validate({"name": name, "command": ["true"], "queue": queue, "resources": {"count": 0, "cpu_cores": 1}})


def test_a_burst_of_submits_takes_fewer_transactions_than_submits_and_each_gets_its_answer(pool):
    commits = []
    event.listen(pool.engine, "commit", lambda conn: commits.append(1))
    submits = SubmitQueue(pool.factory, "refuse")
    answers: dict[str, object] = {}
    start = threading.Barrier(40)

    def one(i: int) -> None:
        start.wait()
        try:
            answers[f"job-{i}"] = submits.submit(_spec(f"job-{i}", "nowhere" if i == 7 else "default"), None)
        except Invalid as refusal:
            answers[f"job-{i}"] = refusal

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert isinstance(answers["job-7"], Invalid) and answers["job-7"].field == "spec.queue"
    stored = {name: out for name, out in answers.items() if name != "job-7"}
    assert {out.name for out in stored.values()} == set(stored) and len({out.id for out in stored.values()}) == 39
    assert all(out.state == "pending" for out in stored.values())
    with pool.factory() as session:
        assert session.scalar(select(func.count()).select_from(JobModel)) == 39
    assert len(commits) < 39  # stored together, not one transaction each


def test_a_store_error_fails_every_submit_of_its_batch(pool, monkeypatch):
    from poold.services import jobs

    def broken(*args, **kwargs):
        raise RuntimeError("the store went away")

    monkeypatch.setattr(jobs, "submit_many", broken)
    with pytest.raises(RuntimeError, match="went away"):
        SubmitQueue(pool.factory, "refuse").submit(_spec("x"), None)
