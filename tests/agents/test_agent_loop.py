"""The agent's loop against a fake daemon: register, heartbeat, start, report, survive outages."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agents.agent import Agent
from agents.client import Backoff, DaemonClient
from agents.config import AgentSettings
from agents.inventory import Inventory
from poold_wire.messages import AssignedDevice, Assignment
from poold_wire.records import DeviceRecord, HostRecord
from tests.agents.fake_daemon import FakeDaemon

GPU = DeviceRecord(uuid="GPU-aaaa", vendor="nvidia", kind="gpu", model="H100", index=0, memory_total_mib=81559)
INVENTORY = Inventory(host=HostRecord(hostname="node-1", cpu_cores=8, memory_total_mib=65536), devices=[GPU],
                      collectors={"host": "ok", "nvidia": "ok"})


def job(job_id: int, script: str, **kwargs) -> Assignment:
    return Assignment(job_id=job_id, name=f"job-{job_id}", command=["sh", "-c", script],
                      devices=[AssignedDevice(uuid="GPU-aaaa", kind="gpu", vendor="nvidia", model="H100", index=0)],
                      **kwargs)


class Harness:
    """An agent over a fake daemon, run in a thread; what it told systemd in ``notes``."""

    def __init__(self, state_dir: Path, daemon: FakeDaemon, heartbeat_interval_s: float = 0.2) -> None:
        self.daemon = daemon
        self.notes: list[str] = []
        self.xid_callback = None
        self.settings = AgentSettings(server_url="http://poold.test", node_name="node-1", state_dir=state_dir,
                                      heartbeat_interval_s=heartbeat_interval_s, poll_interval_s=0.05,
                                      kill_grace_s=0.5, retry_max_s=0.4)
        self.agent: Agent | None = None
        self.thread: threading.Thread | None = None

    def _watcher(self, on_event):
        self.xid_callback = on_event
        return None

    def start(self) -> Agent:
        self.agent = Agent(self.settings, inventory_source=lambda: INVENTORY, watcher_factory=self._watcher,
                           client=DaemonClient(self.settings.server_url, transport=self.daemon.transport()),
                           notify=self.notes.append, backoff=Backoff(base_s=0.05, cap_s=0.4))
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()
        return self.agent

    def stop(self) -> None:
        if self.agent is not None and self.thread is not None:
            self.agent.stop()
            self.thread.join(timeout=10)
            assert not self.thread.is_alive(), "the agent did not stop"
            self.agent = self.thread = None


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon(heartbeat_interval_s=0.2)


@pytest.fixture
def harness(tmp_path: Path, daemon: FakeDaemon) -> Iterator[Harness]:
    h = Harness(tmp_path / "agent", daemon)
    yield h
    h.stop()
    # Nothing a test started may outlive it.
    for state_file in (tmp_path / "agent" / "jobs").glob("*/shim.json"):
        try:
            psutil.Process(int(state_file.read_text().split('"pid": ')[1].split(",")[0])).kill()
        except (psutil.Error, IndexError, ValueError):
            pass


def ended(daemon: FakeDaemon, job_id: int) -> bool:
    return any(kind == "ended" for kind, _, _ in daemon.event_kinds(job_id))


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
