"""The runner's part in preemption: a stop with the daemon's grace (SIGTERM, the grace, SIGKILL),
and a later run of the same job id started afresh once the earlier run is done and reported."""

from __future__ import annotations

import sys
import time

from agents.runner import Runner
from tests.agents.test_runner import job, make_runner, py, wait_ended, wait_file  # noqa: F401 (fixture)

IGNORES_SIGTERM = """
    import signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(sys.argv[1], "w").write("ready")
    time.sleep(60)
"""


def drain(runner: Runner) -> None:
    """As if the daemon took every queued event and the whole log."""
    for path, _ in runner.outbox.pending():
        runner.outbox.remove(path)
    for state in runner.jobs.values():
        state.log_done = state.outcome is not None
        runner.save(state)


def test_a_stop_uses_its_own_grace_then_sigkill(make_runner, tmp_path) -> None:
    runner = make_runner(kill_grace_s=60.0)  # the agent's own grace would outlast the test
    ready = tmp_path / "ready"
    runner.start(job(1, py(IGNORES_SIGTERM) + [str(ready)]))
    wait_file(ready)
    began = time.monotonic()
    assert runner.cancel(1, "preempted for job 9", grace_s=0.3)
    assert not runner.cancel(1)  # the same job's `cancel` entry, for older agents, changes nothing
    state = wait_ended(runner, 1)
    assert time.monotonic() - began < 10
    assert (state.outcome, state.kill_grace_s) == ("cancelled", 0.3)
    assert state.term_sent_at is not None and state.kill_sent_at is not None
    assert (state.kill_sent_at - state.term_sent_at).total_seconds() >= 0.3
    assert state.message.startswith("preempted for job 9; killed by SIGKILL")


def test_a_later_run_starts_afresh_and_keeps_the_earlier_output(make_runner) -> None:
    runner = make_runner()
    runner.start(job(1, [sys.executable, "-c", "print('first')"]))
    wait_ended(runner, 1)
    assert not runner.takes(job(1, ["true"], run=2))  # its ended event is not taken yet
    drain(runner)
    assert not runner.takes(job(1, ["true"], run=1))  # the same run again: never twice
    assert runner.start(job(1, [sys.executable, "-c", "print('second')"], run=2))
    state = wait_ended(runner, 1)
    assert (state.outcome, state.assignment.run) == ("succeeded", 2)
    assert runner.store.log_path(1).read_text() == "second\n"
    assert (runner.store.dir(1) / "run-1.log").read_text() == "first\n"
    assert {(e.kind, e.run) for _, e in runner.outbox.pending()} == {("started", 2), ("ended", 2)}
