"""Running the jobs placed on this node: start them under a shim, kill them, reap them.

``Runner`` never blocks for long: ``start`` waits only for the shim's handshake, ``cancel``
records the intent and sends SIGTERM, and ``poll`` (called once per agent loop) moves every
job forward: it reaps ended jobs, enforces ``max_runtime_s``, escalates to SIGKILL after
``kill_grace_s``, and queues ``started``/``ended`` events in the outbox.

Outcome rules, decided once and written to ``state.json`` before the event is queued: an
intent recorded by the agent (cancelled, timed_out) wins; otherwise exit 0 is succeeded, a
non-zero exit or a signal is failed, and a shim gone without ``exit.json`` is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from agents.shim import carries_job, job_processes, signal_all
from agents.state import Intent, JobState, JobStore, Outbox, utcnow
from poold_wire.messages import AssignedDevice, Assignment, JobEvent, event_message

if TYPE_CHECKING:
    from agents.inventory import Inventory

log = logging.getLogger(__name__)

# Every variable that narrows which accelerators a process sees: a job gets only the ones
# the agent sets for it, never one inherited from the agent's own environment.
VISIBILITY_VARS = (
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "POOLD_FPGA_DEVICES",
)
# Variables of the agent's service that must not leak into a job.
SERVICE_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
SHIM_STUCK_S = 5.0  # after SIGKILL of the job's processes, the shim must record the exit by then


def visibility_env(devices: list[AssignedDevice]) -> dict[str, str]:
    """The variables that show a job its devices and nothing else.

    NVIDIA GPUs and MIG slices by uuid (``CUDA_VISIBLE_DEVICES=""`` hides every GPU), Ascend
    NPUs by index in ascending order, AMD GPUs by uuid (or index), FPGAs by PCI bus id.
    """
    nvidia = [d.uuid for d in devices if d.vendor == "nvidia"]
    npus = sorted((d.index for d in devices if d.kind == "npu" and d.index is not None))
    amd = [d.uuid if d.uuid.startswith("GPU-") or d.index is None else str(d.index)
           for d in devices if d.vendor == "amd" and d.kind == "gpu"]
    fpgas = [d.bus_id or d.uuid for d in devices if d.kind == "fpga"]
    env = {"CUDA_VISIBLE_DEVICES": ",".join(nvidia)}
    if npus:
        env["ASCEND_RT_VISIBLE_DEVICES"] = ",".join(str(index) for index in npus)
    if amd:
        env["ROCR_VISIBLE_DEVICES"] = ",".join(amd)
    if fpgas:
        env["POOLD_FPGA_DEVICES"] = ",".join(fpgas)
    return env


def job_env(assignment: Assignment, node: str, base: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment without its service and visibility variables, then the job's
    own env, then what the agent sets (which the job cannot override)."""
    env = {key: value for key, value in base.items()
           if key not in VISIBILITY_VARS and key not in SERVICE_VARS and not key.startswith(("POOLD_AGENT_", "POOLD_JOB_"))}
    env.update(assignment.env)
    for key in VISIBILITY_VARS:
        env.pop(key, None)
    env.update(visibility_env(assignment.devices))
    env.update(POOLD_JOB_ID=str(assignment.job_id), POOLD_JOB_NAME=assignment.name, POOLD_NODE=node)
    return env


class Runner:
    """The jobs of one node, kept in ``state_dir`` so that a new Runner adopts them.

    ``kill_untagged`` allows killing a leftover process on a job's device that does not carry
    the job's id, when no other running job shares the device; the agent turns it off under
    the fake-device harness, whose process lists are made up.
    """

    def __init__(
        self,
        state_dir: Path,
        node: str,
        outbox: Outbox | None = None,
        kill_grace_s: float = 10.0,
        kill_untagged: bool = True,
        base_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        launch_timeout_s: float = 5.0,
    ) -> None:
        self.store = JobStore(state_dir)
        self.outbox = outbox or Outbox(state_dir)
        self.node = node
        self.kill_grace_s = kill_grace_s
        self.kill_untagged = kill_untagged
        self.base_env = os.environ if base_env is None else base_env
        self.python = python
        self.launch_timeout_s = launch_timeout_s
        self.jobs: dict[int, JobState] = {state.job_id: state for state in self.store.load_all()}
        self._shims: dict[int, subprocess.Popen] = {}  # only the shims this Runner started
        self._victims: dict[int, dict[int, psutil.Process]] = {}  # who got SIGTERM, for SIGKILL
        me = psutil.Process()
        self._protected = {1, me.pid, *(parent.pid for parent in me.parents())}
        adopted = self.running_ids()
        if adopted:
            log.info("adopting %d job(s) from %s: %s", len(adopted), state_dir, adopted)

    # ---- queries ------------------------------------------------------------------------

    def known(self, job_id: int) -> bool:
        return job_id in self.jobs

    def running_ids(self) -> list[int]:
        """Jobs whose outcome is not decided yet, including ones being killed."""
        return sorted(job_id for job_id, state in self.jobs.items() if state.outcome is None)

    def save(self, state: JobState) -> None:
        self.store.save(state)

    # ---- commands -----------------------------------------------------------------------

    def start(self, assignment: Assignment) -> bool:
        """Start a job under its shim; False when this node already has (or had) the job."""
        if assignment.job_id in self.jobs:
            return False
        state = JobState(assignment=assignment, node=self.node)
        spec = {"command": assignment.command, "env": job_env(assignment, self.node, self.base_env),
                "workdir": assignment.workdir, "user": assignment.user}
        job_dir = self.store.create(state, spec)
        self.jobs[state.job_id] = state
        try:
            with open(job_dir / "shim.log", "ab") as shim_log:
                shim = subprocess.Popen(
                    [self.python, "-m", "agents.shim", str(job_dir)],
                    stdin=subprocess.DEVNULL, stdout=shim_log, stderr=subprocess.STDOUT, cwd="/", close_fds=True,
                )
        except OSError as exc:
            self._end(state, {"exit_code": None, "error": f"cannot start the job's shim: {exc}",
                              "ended_at": utcnow().isoformat()}, None)
            return True
        self._shims[state.job_id] = shim
        state.shim_pid = shim.pid
        state.shim_create_time = psutil.Process(shim.pid).create_time()  # our child: pid not reusable yet
        self.save(state)
        deadline = time.monotonic() + self.launch_timeout_s
        while time.monotonic() < deadline and shim.poll() is None:
            if self.store.read(state.job_id, "child.json") or self.store.read(state.job_id, "exit.json"):
                break
            time.sleep(0.005)
        self._queue_started(state)
        log.info("job %d started under shim %d: %s", state.job_id, shim.pid, assignment.command)
        return True

    def cancel(self, job_id: int, reason: str = "cancelled by the daemon") -> bool:
        """Kill a running job (outcome cancelled); False when it has already ended or is being killed.

        A job this node never started (the daemon cancelled it between placing it and our
        start) is recorded as cancelled and reported, so that it is never started later.
        """
        state = self.jobs.get(job_id)
        if state is None:
            state = JobState(assignment=Assignment(job_id=job_id, name=f"job-{job_id}", command=[]), node=self.node,
                             intent="cancelled", intent_reason=reason)
            self.store.create(state, spec={})
            self.jobs[job_id] = state
            self._end(state, {"exit_code": None, "error": "it had not started on this node",
                              "ended_at": utcnow().isoformat()}, None)
            return True
        if state.outcome is not None or state.intent is not None:
            return False
        self._record_intent(state, "cancelled", reason)
        return True

    def poll(self, inventory_source: Callable[[], Inventory] | None = None) -> None:
        """Move every job forward; ``inventory_source`` gives a fresh inventory after a job ends."""
        for state in list(self.jobs.values()):
            if state.outcome is None:
                self._poll_running(state, inventory_source)
            elif not state.ended_queued:
                self._queue_ended(state)  # outcome decided just before a restart

    def prune(self, retention_s: float, keep: set[int]) -> list[int]:
        """Forget finished jobs that ended more than ``retention_s`` ago, except ``keep``."""
        now = utcnow()
        gone = [job_id for job_id, state in self.jobs.items()
                if state.finished and job_id not in keep and state.ended_at is not None
                and (now - state.ended_at).total_seconds() > retention_s]
        for job_id in gone:
            self.store.remove(job_id)
            del self.jobs[job_id]
        return gone

    # ---- one job ------------------------------------------------------------------------

    def _poll_running(self, state: JobState, inventory_source: Callable[[], Inventory] | None) -> None:
        shim = self._shims.get(state.job_id)
        if shim is not None and shim.poll() is not None:
            del self._shims[state.job_id]  # reaped; liveness now comes from psutil
        self._queue_started(state)
        exit_info = self.store.read(state.job_id, "exit.json")
        if exit_info is not None and self._shim_alive(state) and not self._shim_exits(state):
            # The command ended but left descendants behind, which hold the job's devices:
            # they get SIGTERM, then SIGKILL, and the job is reported once they are gone.
            self._escalate(state)
            return
        if not self._shim_alive(state):
            exit_info = self.store.read(state.job_id, "exit.json")  # written just before it ended
            self._end(state, exit_info, inventory_source)
            return
        max_runtime = state.assignment.max_runtime_s
        if state.intent is None and max_runtime is not None and state.started_at is not None:
            if (utcnow() - state.started_at).total_seconds() > max_runtime:
                self._record_intent(state, "timed_out", f"ran longer than its max_runtime_s of {max_runtime:g}")
        if state.intent is not None:
            self._escalate(state)

    def _shim_exits(self, state: JobState, timeout_s: float = 0.5) -> bool:
        """Whether the shim exits within ``timeout_s`` by itself (it does once it has no children)."""
        if state.shim_pid is None or job_processes(state.shim_pid):
            return False
        try:
            if (shim := self._shims.get(state.job_id)) is not None:
                shim.wait(timeout_s)
                del self._shims[state.job_id]
            elif state.shim_pid is not None:
                psutil.Process(state.shim_pid).wait(timeout_s)
        except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
            return False
        except psutil.Error:
            pass
        return True

    def _shim_alive(self, state: JobState) -> bool:
        pid, create_time = state.shim_pid, state.shim_create_time
        if pid is None:  # the agent died between writing state.json and starting the shim
            shim_info = self.store.read(state.job_id, "shim.json") or {}
            pid, create_time = shim_info.get("pid"), shim_info.get("create_time")
            if pid is None:
                return False
            state.shim_pid, state.shim_create_time = pid, create_time
        try:
            proc = psutil.Process(pid)
            reused = create_time is not None and abs(proc.create_time() - create_time) > 0.05
            return not reused and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _queue_started(self, state: JobState) -> None:
        if state.started_queued:
            return
        child = self.store.read(state.job_id, "child.json")
        if child is None:
            return
        state.started_at = datetime.fromisoformat(child["started_at"])
        self.outbox.put(JobEvent(job_id=state.job_id, kind="started", at=state.started_at, pid=child["pid"]))
        state.started_queued = True
        self.save(state)

    def _record_intent(self, state: JobState, intent: Intent, reason: str) -> None:
        # The intent is on disk before any signal, so a restart mid-kill keeps the outcome.
        state.intent, state.intent_reason = intent, reason
        self.save(state)
        log.info("job %d: %s (%s)", state.job_id, intent, reason)
        self._escalate(state)

    def _escalate(self, state: JobState) -> None:
        """SIGTERM the group and every descendant, SIGKILL them after the grace, then the shim."""
        if not self._shim_alive(state):
            return
        assert state.shim_pid is not None
        now = utcnow()
        if state.term_sent_at is None:
            victims = job_processes(state.shim_pid)
            self._victims[state.job_id] = victims
            try:
                os.killpg(state.shim_pid, signal.SIGTERM)  # the shim's handler ignores it
            except OSError:
                pass
            hit = signal_all(victims, signal.SIGTERM)  # including the ones that left the group with setsid
            if state.intent is None and hit:  # the command has ended: these are its leftovers
                state.leftovers = "stopped leftover processes of the job: " + ", ".join(hit)
            state.term_sent_at = now
            self.save(state)
        elif state.kill_sent_at is None and (now - state.term_sent_at).total_seconds() >= self.kill_grace_s:
            victims = {**self._victims.pop(state.job_id, {}), **job_processes(state.shim_pid)}
            victims.pop(state.shim_pid, None)  # the shim must live to write exit.json
            killed = signal_all(victims, signal.SIGKILL)
            log.info("job %d: SIGKILL after %gs: %s", state.job_id, self.kill_grace_s, ", ".join(killed) or "none left")
            state.kill_sent_at = now
            self.save(state)
        elif state.kill_sent_at is not None and (now - state.kill_sent_at).total_seconds() >= SHIM_STUCK_S:
            log.warning("job %d: shim %d did not record the exit; killing it", state.job_id, state.shim_pid)
            try:
                signal_all({state.shim_pid: psutil.Process(state.shim_pid)}, signal.SIGKILL)
            except psutil.Error:
                pass  # it ended after all

    def _end(self, state: JobState, exit_info: dict | None, inventory_source: Callable[[], Inventory] | None) -> None:
        """Decide the outcome once, persist it, clean up the job's leftovers, queue ``ended``."""
        if state.outcome is not None:
            return  # decided already: an outcome is never rewritten
        if exit_info is None:
            state.outcome = state.intent or "lost"
            detail = "the job's shim ended without recording an exit status"
        elif exit_info.get("error"):
            state.outcome = state.intent or "failed"
            detail = exit_info["error"]
        else:
            state.exit_code = exit_info["exit_code"]
            state.outcome = state.intent or ("succeeded" if state.exit_code == 0 else "failed")
            sig = exit_info.get("signal")
            detail = f"killed by {signal.Signals(sig).name}" if sig else f"exit code {state.exit_code}"
        state.ended_at = datetime.fromisoformat(exit_info["ended_at"]) if exit_info else utcnow()
        state.message = "; ".join(filter(None, [state.intent_reason, detail, state.leftovers]))
        self.save(state)
        self._victims.pop(state.job_id, None)
        cleaned = self._clean_up(state, inventory_source)
        if cleaned:
            state.message = f"{state.message}; {cleaned}"
        log.info("job %d ended: %s (%s)", state.job_id, state.outcome, state.message)
        self._queue_ended(state)

    def _queue_ended(self, state: JobState) -> None:
        assert state.outcome is not None and state.ended_at is not None
        self.outbox.put(JobEvent(job_id=state.job_id, kind="ended", at=state.ended_at, exit_code=state.exit_code,
                                 outcome=state.outcome, message=event_message(state.message)))
        state.ended_queued = True
        self.save(state)

    # ---- leftovers ----------------------------------------------------------------------

    def _clean_up(self, state: JobState, inventory_source: Callable[[], Inventory] | None) -> str:
        """Kill what the job left behind outside the shim's care; a sentence for the ended event, or ''."""
        parts = []
        if state.shim_pid is not None:
            # Orphans of a shim that died early: members of its old group or session. The
            # environment check guards against the group id having been reused since.
            stragglers = {pid: proc for pid, proc in job_processes(state.shim_pid).items()
                          if pid not in self._protected and carries_job(proc, state.job_id)}
            if killed := signal_all(stragglers, signal.SIGKILL):
                parts.append("killed leftover processes of the job: " + ", ".join(killed))
        if state.assignment.devices and inventory_source is not None:
            parts.extend(self._clean_devices(state, inventory_source))
        return "; ".join(parts)

    def _clean_devices(self, state: JobState, inventory_source: Callable[[], Inventory]) -> list[str]:
        """Kill processes on the job's devices that carry its id, or any, if no running job shares the device."""
        taken_at = time.time()
        try:
            inventory = inventory_source()
        except Exception as exc:  # a failing collector must not stop the job from being reported
            log.warning("job %d: no inventory for the device clean-up: %s", state.job_id, exc)
            return []
        mine = {d.uuid for d in state.assignment.devices} | {d.parent_uuid for d in state.assignment.devices if d.parent_uuid}
        others: set[str] = set()
        for other in self.jobs.values():
            if other.outcome is None and other.job_id != state.job_id:
                others |= {d.uuid for d in other.assignment.devices} | {d.parent_uuid for d in other.assignment.devices if d.parent_uuid}
        parts = []
        for device in inventory.devices:
            if device.uuid not in mine:
                continue
            shared = device.uuid in others or (device.parent_uuid in others if device.parent_uuid else False)
            victims: dict[int, psutil.Process] = {}
            for entry in device.attributes.get("processes") or []:
                pid = entry.get("pid") if isinstance(entry, dict) else None
                if not isinstance(pid, int) or pid in self._protected:
                    continue
                try:
                    proc = psutil.Process(pid)
                    if proc.create_time() > taken_at:
                        continue  # started after the inventory was taken: not the one it listed
                except psutil.Error:
                    continue
                if carries_job(proc, state.job_id) or (self.kill_untagged and not shared):
                    victims[pid] = proc
            if killed := signal_all(victims, signal.SIGKILL):
                parts.append(f"killed leftover processes on {device.uuid}: " + ", ".join(killed))
        return parts
