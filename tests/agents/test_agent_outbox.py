"""No poison message: a report the daemon refuses for good is recorded and dropped, the ones
behind it go on; only transient errors (connection, timeout, 5xx) are retried."""

from __future__ import annotations

import time

from agents.state import RefusalJournal
from tests.agents.agent_harness import Harness, ended, job
from tests.agents.fake_daemon import FakeDaemon


def refusals(harness: Harness) -> list[tuple[int, str]]:
    return [(entry["job_id"], entry["detail"]) for entry in RefusalJournal(harness.settings.state_dir).entries()]


def test_an_event_refused_with_a_4xx_does_not_hold_up_the_events_behind_it(harness: Harness, daemon: FakeDaemon) -> None:
    # Every report of job 1 is refused at the door, as a NUL byte in a field would be.
    daemon.refuse_event = lambda event: "message: NUL bytes are not allowed" if event.job_id == 1 else None
    daemon.assign(job(1, "echo one"))
    daemon.assign(job(2, "echo two"))  # started in the same step: its events queue behind job 1's
    agent = harness.start()
    daemon.wait_for(lambda: ended(daemon, 2), what="job 2's end, queued behind job 1's refused reports")
    daemon.wait_for(lambda: agent.runner.jobs[1].ended_queued and not agent.runner.outbox.pending(),
                    what="job 1's reports settled")

    assert daemon.event_kinds(1) == []
    assert daemon.event_kinds(2) == [("started", None, None), ("ended", "succeeded", 0)]
    details = [detail for job_id, detail in refusals(harness) if job_id == 1]
    assert details[0] == "started event refused: 422: POST /api/v1/agents/node-1/events: invalid request: events.0: message: NUL bytes are not allowed"
    assert details[1].startswith("ended event refused: ")
    assert details[2].startswith("ended event without its message refused too: ")
    assert [job_id for job_id, _ in refusals(harness)] == [1, 1, 1]
    # Refused once each, never retried: the events requests stop once the outbox is empty.
    posts = daemon.count("POST", "/events")
    time.sleep(0.3)
    assert daemon.count("POST", "/events") == posts
    assert agent.runner.outbox.pending() == []


def test_an_ended_event_refused_for_its_message_is_delivered_without_it(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.refuse_event = lambda event: "message: too long" if event.message is not None else None
    daemon.assign(job(1, "exit 3"))
    harness.start()
    daemon.wait_for(lambda: ended(daemon, 1), what="job 1's end")
    assert daemon.event_kinds(1) == [("started", None, None), ("ended", "failed", 3)]
    assert [e.message for e in daemon.events if e.kind == "ended"] == [None]
    [(job_id, detail)] = refusals(harness)
    assert job_id == 1 and detail.startswith("ended event refused: ") and detail.endswith("message: too long")


def test_a_5xx_is_retried_in_order_until_the_daemon_takes_the_events(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.fail_events = 3  # e.g. the database was restarting
    daemon.assign(job(1, "echo hi"))
    agent = harness.start()
    daemon.wait_for(lambda: ended(daemon, 1), what="job 1's end after three 500s")
    daemon.wait_for(lambda: agent.runner.outbox.pending() == [], what="the outbox emptied")
    assert daemon.event_kinds(1) == [("started", None, None), ("ended", "succeeded", 0)]
    assert daemon.fail_events == 0 and daemon.count("POST", "/events") >= 4
    assert refusals(harness) == []


def test_events_the_daemon_answers_not_accepted_are_recorded(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.assign(job(1, "sleep 0.3"))
    agent = harness.start()
    daemon.wait_for(lambda: daemon.event_kinds(1) == [("started", None, None)], what="job 1 started")
    with daemon.lock:
        daemon.jobs[1].node = "node-2"  # the daemon moved it elsewhere meanwhile
    daemon.wait_for(lambda: agent.runner.outbox.pending() == [] and agent.runner.jobs[1].ended_queued, what="the end settled")
    assert refusals(harness) == [(1, "ended event not accepted: job 1 is not placed on node node-1")]


def test_a_refused_log_upload_is_recorded_and_the_rest_not_sent(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.refuse_logs.add(1)
    daemon.assign(job(1, "echo one"))
    daemon.assign(job(2, "echo two"))
    agent = harness.start()
    daemon.wait_for(lambda: bytes(daemon.logs.get(2, b"")) == b"two\n", what="job 2's log")
    daemon.wait_for(lambda: agent.runner.jobs[1].log_done, what="job 1's log given up")
    [(job_id, detail)] = refusals(harness)
    assert job_id == 1 and detail.startswith("log upload at byte 0 refused (")
    assert "413" in detail and 1 not in daemon.logs
