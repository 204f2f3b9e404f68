"""An agent over a fake daemon, run in a thread: what the agent-loop tests drive."""

from __future__ import annotations

import threading
from pathlib import Path

from agents.agent import Agent
from agents.client import Backoff, DaemonClient
from agents.config import AgentSettings
from agents.inventory import Inventory
from poold_wire.records import DeviceRecord, HostRecord
from poold_wire.messages import AssignedDevice, Assignment
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
                                      kill_grace_s=0.5, retry_max_s=0.4, machine_id="machine-1",
                                      # The loop is what these tests are about: jobs run as the
                                      # test (root or not) and are held by their environment.
                                      allow_root=True, default_user="root", isolation="env",
                                      join_token=daemon.join_token)
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


def ended(daemon: FakeDaemon, job_id: int) -> bool:
    return any(kind == "ended" for kind, _, _ in daemon.event_kinds(job_id))
