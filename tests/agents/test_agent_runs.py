"""The agent's loop and a preempted job's later run: its output goes after the earlier runs'
in the daemon's log, wherever the earlier runs were."""

from __future__ import annotations

from tests.agents.agent_harness import Harness, ended, job
from tests.agents.fake_daemon import FakeDaemon


def test_a_later_run_ships_its_output_after_the_earlier_runs(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.logs[1] = bytearray(b"run one, on another node\n")  # what the first run shipped before its preemption
    daemon.assign(job(1, "echo run two", run=2))
    harness.start()
    daemon.wait_for(lambda: ended(daemon, 1), what="job 1 ended")
    daemon.wait_for(lambda: harness.agent.runner.jobs[1].log_done, what="the log shipped")
    assert bytes(daemon.logs[1]) == b"run one, on another node\nrun two\n"
    assert harness.agent.runner.jobs[1].log_base == len(b"run one, on another node\n")
    assert [e.run for e in daemon.events if e.job_id == 1] == [2, 2]

