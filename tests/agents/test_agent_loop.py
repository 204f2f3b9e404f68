"""The agent's loop against a fake daemon: register, heartbeat, start, report, survive outages."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from tests.agents.agent_harness import Harness, ended, job
from tests.agents.fake_daemon import FakeDaemon

def test_register_heartbeat_start_and_report(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.assign(job(1, "echo hello; sleep 0.4; echo bye"))
    harness.start()
    daemon.wait_for(lambda: ended(daemon, 1), what="job 1 ended")
    daemon.wait_for(lambda: bytes(daemon.logs.get(1, b"")) == b"hello\nbye\n", what="the whole log")

    assert daemon.calls[0].path == "/api/v1/agents/register"
    assert daemon.event_kinds(1) == [("started", None, None), ("ended", "succeeded", 0)]
    assert any(1 in hb.running_jobs for hb in daemon.heartbeats)
    assert daemon.heartbeats[0].devices[0].uuid == "GPU-aaaa"
    # Listed again until its started event landed, the job still ran once.
    assert sorted(p.name for p in (harness.settings.state_dir / "jobs").iterdir()) == ["1"]
    harness.stop()
    assert harness.notes[0] == "READY=1\nSTATUS=registered as node-1"
    assert "WATCHDOG=1" in harness.notes
    assert harness.notes[-1] == "STOPPING=1"


def test_daemon_outage_keeps_the_job_and_reports_in_order_once(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.go_down_after_listing = True  # the started event cannot be sent
    daemon.assign(job(1, "echo one; sleep 0.5; echo two"))
    agent = harness.start()
    daemon.wait_for(lambda: daemon.down, what="the outage")
    down_at = time.monotonic()
    daemon.wait_for(lambda: agent.runner.jobs.get(1) is not None and agent.runner.jobs[1].ended_queued,
                    what="job 1 to end while the daemon is away")
    # Both events wait on disk, in order.
    queued = [(e.kind, e.outcome) for _, e in agent.runner.outbox.pending()]
    assert queued == [("started", None), ("ended", "succeeded")]
    time.sleep(max(0.0, down_at + 1.5 - time.monotonic()))
    attempts = daemon.count("POST", "/register", refused=True) + daemon.count("POST", "/heartbeat", refused=True) \
        + daemon.count("GET", "/assignments", refused=True) + daemon.count("POST", "/events", refused=True)
    # Polling every 0.05 s would make ~30 attempts in 1.5 s; backoff (0.05 s doubling, cap 0.4 s) makes < 12.
    assert 2 <= attempts <= 12

    daemon.down = False
    daemon.wait_for(lambda: ended(daemon, 1), what="the events after the outage")
    daemon.wait_for(lambda: bytes(daemon.logs.get(1, b"")) == b"one\ntwo\n", what="the whole log")
    time.sleep(0.3)  # a few more loops: nothing is sent twice
    assert daemon.event_kinds(1) == [("started", None, None), ("ended", "succeeded", 0)]
    assert daemon.refused_events == []
    assert agent.runner.outbox.pending() == []


def test_log_resumes_from_the_daemons_size(harness: Harness, daemon: FakeDaemon) -> None:
    # The daemon already holds 3 bytes (an upload whose answer was lost): 409, resend from 3.
    daemon.logs[1] = bytearray(b"hel")
    daemon.assign(job(1, "printf hello"))
    harness.start()
    daemon.wait_for(lambda: ended(daemon, 1), what="job 1 ended")
    daemon.wait_for(lambda: harness.agent.runner.jobs[1].log_done, what="the log shipped")
    assert bytes(daemon.logs[1]) == b"hello"
    assert daemon.count("PUT", "/jobs/1/log") == 2


def test_daemon_down_at_start_still_signals_ready(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.down = True
    harness.start()
    daemon.wait_for(lambda: harness.notes != [], what="READY")
    assert harness.notes[0] == "READY=1\nSTATUS=daemon unreachable, retrying"
    daemon.down = False
    daemon.wait_for(lambda: daemon.count("POST", "/register", refused=False) == 1, what="registration")


def test_forgotten_node_registers_again(harness: Harness, daemon: FakeDaemon) -> None:
    harness.start()
    daemon.wait_for(lambda: len(daemon.heartbeats) >= 1, what="a heartbeat")
    daemon.forget("node-1")  # e.g. the daemon's database was reset
    daemon.wait_for(lambda: daemon.count("POST", "/register", refused=False) == 2, what="registering again")
    before = len(daemon.heartbeats)
    daemon.wait_for(lambda: len(daemon.heartbeats) > before, what="heartbeats after re-registering")


def test_cancel_from_the_daemon_kills_the_job(harness: Harness, daemon: FakeDaemon) -> None:
    daemon.assign(job(1, "sleep 30"))
    daemon.assign(job(2, "sleep 30"))
    daemon.cancel(2)  # cancelled between placement and start: it must never run
    harness.start()
    daemon.wait_for(lambda: daemon.event_kinds(1) == [("started", None, None)], what="job 1 started")
    daemon.cancel(1)
    daemon.wait_for(lambda: ended(daemon, 1), what="job 1 cancelled")
    assert daemon.event_kinds(1)[-1][:2] == ("ended", "cancelled")
    assert daemon.event_kinds(2) == [("ended", "cancelled", None)]
    assert not (harness.settings.state_dir / "jobs" / "2" / "output.log").exists()


def test_xid_marks_the_device_unhealthy_and_heartbeats_at_once(tmp_path: Path, daemon: FakeDaemon) -> None:
    daemon.heartbeat_interval_s = 30  # only the XID can cause a second heartbeat
    h = Harness(tmp_path / "agent", daemon)
    try:
        h.start()
        daemon.wait_for(lambda: daemon.count("POST", "/register") == 1, what="registration")
        time.sleep(0.2)
        assert daemon.heartbeats == []  # the next regular one is 30 s away
        h.xid_callback("GPU-aaaa", 79, "XID 79: GPU has fallen off the bus")
        daemon.wait_for(lambda: len(daemon.heartbeats) == 1, timeout_s=2, what="an immediate heartbeat")
        device = daemon.heartbeats[-1].devices[0]
        assert (device.uuid, device.health, device.health_reason) == (
            "GPU-aaaa", "unhealthy", "XID 79: GPU has fallen off the bus")
    finally:
        h.stop()


def test_stopping_the_agent_leaves_jobs_running_for_the_next_one(harness: Harness, daemon: FakeDaemon, tmp_path: Path) -> None:
    go = tmp_path / "go"
    daemon.assign(job(1, f"while [ ! -e {go} ]; do sleep 0.02; done; exit 4"))
    agent = harness.start()
    daemon.wait_for(lambda: daemon.event_kinds(1) == [("started", None, None)], what="job 1 started")
    shim_pid = agent.runner.jobs[1].shim_pid
    harness.stop()  # SIGTERM to the agent: the job lives on
    assert psutil.Process(shim_pid).status() != psutil.STATUS_ZOMBIE

    harness.start()
    go.touch()
    daemon.wait_for(lambda: ended(daemon, 1), what="the adopted job's end")
    time.sleep(0.2)
    assert daemon.event_kinds(1) == [("started", None, None), ("ended", "failed", 4)]
    assert os.path.exists(harness.settings.state_dir / "jobs" / "1" / "exit.json")


def test_the_agent_sends_its_machine_id_at_register_and_in_heartbeats(harness: Harness, daemon: FakeDaemon) -> None:
    harness.start()
    daemon.wait_for(lambda: len(daemon.heartbeats) >= 2, what="heartbeats")
    assert [r.machine_id for r in daemon.registrations] == ["machine-1"]
    assert {hb.machine_id for hb in daemon.heartbeats} == {"machine-1"}


def test_a_name_held_by_another_machine_stops_the_agent_until_it_is_free(harness: Harness, daemon: FakeDaemon) -> None:
    harness.start()
    daemon.wait_for(lambda: daemon.count("GET", "/assignments") >= 1, what="the first poll")
    daemon.owners["node-1"] = "machine-2"  # the node was lost meanwhile, and another machine took the name
    daemon.wait_for(lambda: len(daemon.registrations) >= 2, what="registering again after the refused heartbeat")
    polls = daemon.count("GET", "/assignments")
    time.sleep(0.5)
    assert daemon.count("GET", "/assignments") == polls  # no work is taken under a name it does not hold
    assert daemon.count("POST", "/register") >= 3  # it keeps trying, with backoff (0.05 s doubling, cap 0.4 s)
    del daemon.owners["node-1"]
    daemon.wait_for(lambda: daemon.count("GET", "/assignments") > polls, what="polls once the name is free")


def test_a_poll_refused_for_another_machine_makes_the_agent_register_again(tmp_path: Path, daemon: FakeDaemon) -> None:
    daemon.heartbeat_interval_s = 30  # no heartbeat comes to find out: the poll must
    h = Harness(tmp_path / "agent", daemon)
    try:
        h.start()
        daemon.wait_for(lambda: daemon.count("GET", "/assignments") >= 1, what="the first poll")
        daemon.owners["node-1"] = "machine-2"
        daemon.wait_for(lambda: len(daemon.registrations) >= 2, what="registering again after the refused poll")
        assert daemon.count("POST", "/heartbeat") <= 1
    finally:
        h.stop()
