"""Running the jobs placed on this node: start them under a shim, kill them, reap them.

``Runner`` never blocks for long: ``start`` waits only for the shim's handshake, ``cancel``
records the intent and sends SIGTERM, and ``poll`` (called once per agent loop) moves every
job forward: it reaps ended jobs, enforces ``max_runtime_s``, escalates to SIGKILL after
``kill_grace_s`` (or the grace the daemon gave a job's stop), and queues ``started``/``ended``
events in the outbox. A job preempted and placed here again comes as a later ``run`` of the
same id and starts afresh once everything of its earlier run is done.

Outcome rules, decided once and written to ``state.json`` before the event is queued: an
intent recorded by the agent (cancelled, timed_out) wins; otherwise exit 0 is succeeded, a
non-zero exit or a signal is failed, and a shim gone without ``exit.json`` is lost. A job
whose cgroup's OOM killer struck says it exceeded its ``host_memory``.

Who a job runs as is ``agents.users``'; what holds it, ``agents.isolation``'; the scrub of
its devices after its end, ``agents.scrub``'s.
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

from agents import leftovers
from agents.cgroups import JobCgroup
from agents.isolation import Isolations
from agents.scrub import Scrubber
from agents.job_env import default_workdir, job_env
from agents.shim import job_processes, signal_all
from agents.state import Intent, JobState, JobStore, Outbox, utcnow
from agents.users import UserPolicy, UserRefused
from poold_wire.messages import Assignment, DeviceScrub, JobEvent, event_message
from poold_wire.records import DeviceRecord

if TYPE_CHECKING:
    from agents.inventory import Inventory

log = logging.getLogger(__name__)

SHIM_STUCK_S = 5.0  # after SIGKILL of the job's processes, the shim must record the exit by then


class Runner:
    """The jobs of one node, kept in ``state_dir`` so that a new Runner adopts them.

    ``kill_untagged`` allows killing a leftover process on a job's device that does not carry
    the job's id, when no other running job shares the device; the agent turns it off under
    the fake-device harness, whose process lists are made up. ``users`` says who jobs run as
    (by default ``nobody`` unless they name a user, never root), ``isolation`` what holds
    them (by default their environment alone), ``scrubber`` how their devices are scrubbed
    (by default not at all).
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
        users: UserPolicy | None = None,
        isolation: Isolations | None = None,
        scrubber: Scrubber | None = None,
    ) -> None:
        self.store = JobStore(state_dir)
        self.outbox = outbox or Outbox(state_dir)
        self.node = node
        self.kill_grace_s = kill_grace_s
        self.kill_untagged = kill_untagged
        self.base_env = os.environ if base_env is None else base_env
        self.python = python
        self.launch_timeout_s = launch_timeout_s
        self.users = users or UserPolicy()
        self.isolation = isolation or Isolations()
        self.scrubber = scrubber or Scrubber()
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

    def takes(self, assignment: Assignment) -> bool:
        """Whether ``assignment`` is new here: a job this node never had, or a later run (the
        job was preempted and placed again) of one whose every trace here is done and reported."""
        state = self.jobs.get(assignment.job_id)
        if state is None:
            return True
        return assignment.run > state.assignment.run and state.finished and all(
            event.job_id != state.job_id for _, event in self.outbox.pending())

    def running_ids(self) -> list[int]:
        """Jobs whose outcome is not decided yet, including ones being killed."""
        return sorted(job_id for job_id, state in self.jobs.items() if state.outcome is None)

    def device_holders(self) -> dict[str, int]:
        """Device uuid -> the job holding it, over the jobs whose outcome is not decided yet
        (a MIG slice's job is the slice's, not its GPU's). Safe to call from another thread."""
        return {device.uuid: state.job_id for state in list(self.jobs.values()) if state.outcome is None
                for device in state.assignment.devices}

    def save(self, state: JobState) -> None:
        self.store.save(state)

    # ---- commands -----------------------------------------------------------------------

    def start(self, assignment: Assignment, devices: Mapping[str, DeviceRecord] | None = None) -> bool:
        """Start a job under its shim; False when this node already has (or had) the job, or
        one of its devices is still being scrubbed (it is listed again at the next poll).
        ``devices``: the latest inventory's records by uuid, whose device files the job may open."""
        if not self.takes(assignment):
            return False
        if busy := self.scrubbing() & {device.uuid for device in assignment.devices}:
            log.debug("job %d waits: %s still being scrubbed", assignment.job_id, ", ".join(sorted(busy)))
            return False
        if (earlier := self.jobs.get(assignment.job_id)) is not None:
            self.store.clear_run(assignment.job_id, earlier.assignment.run)
        state = JobState(assignment=assignment, node=self.node)
        job_dir = self.store.dir(state.job_id)
        try:
            run_as = self.users.resolve(assignment.user)
        except UserRefused as refusal:
            self.store.create(state, spec={})
            self.jobs[state.job_id] = state
            self._refuse(state, str(refusal))
            return True
        confinement = self.isolation.confine(assignment, devices or {})
        state.isolation, state.isolation_note = confinement.level, confinement.note
        state.cgroup = [str(d) for d in confinement.cgroup.dirs] if confinement.cgroup else []
        spec = {"command": assignment.command, "env": job_env(assignment, self.node, self.base_env, run_as),
                "workdir": assignment.workdir or default_workdir(run_as, job_dir),
                "run_as": run_as.spec() if run_as else None,
                "cgroup_procs": confinement.cgroup.procs_files if confinement.cgroup else []}
        self.store.create(state, spec)
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
        log.info("job %d started under shim %d (%s): %s", state.job_id, shim.pid, state.isolation, assignment.command)
        return True

    def _refuse(self, state: JobState, reason: str) -> None:
        """End a job that may not start here ``failed``, saying why at the top of its log too."""
        with open(self.store.log_path(state.job_id), "ab") as output:
            output.write(f"poold: cannot start the job: {reason}\n".encode())
        self._end(state, {"exit_code": None, "error": reason, "ended_at": utcnow().isoformat()}, None)

    def scrubbing(self) -> set[str]:
        """Devices whose scrub after an ended job has not finished."""
        return {uuid for state in self.jobs.values() if state.outcome is not None and not state.scrubbed_queued
                for uuid in state.scrubbing if uuid not in state.scrubbed}

    def cancel(self, job_id: int, reason: str = "cancelled by the daemon", grace_s: float | None = None) -> bool:
        """Kill a running job (outcome cancelled); False when it has already ended or is being killed.

        ``grace_s``: SIGTERM to SIGKILL for this job (a preemption's stop), instead of the
        agent's ``kill_grace_s``. A job this node never started (the daemon cancelled it
        between placing it and our start) is recorded as cancelled and reported, so that this
        run of it is never started later.
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
        state.kill_grace_s = grace_s
        self._record_intent(state, "cancelled", reason)
        return True

    def poll(self, inventory_source: Callable[[], Inventory] | None = None) -> None:
        """Move every job forward; ``inventory_source`` gives a fresh inventory after a job ends."""
        for state in list(self.jobs.values()):
            if state.outcome is None:
                self._poll_running(state, inventory_source)
            elif not state.ended_queued:
                self._queue_ended(state)  # outcome decided just before a restart
            if state.ended_queued and state.scrubbing and not state.scrubbed_queued:
                self._scrub(state)

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
        self.outbox.put(JobEvent(job_id=state.job_id, kind="started", at=state.started_at, pid=child["pid"],
                                 isolation=state.isolation, message=event_message(state.isolation_note),
                                 run=state.assignment.run))
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
        cgroup = JobCgroup([Path(d) for d in state.cgroup])
        if state.term_sent_at is None:
            victims = {**job_processes(state.shim_pid), **cgroup.processes()}
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
        elif state.kill_sent_at is None and (now - state.term_sent_at).total_seconds() >= self._grace_of(state):
            victims = {**self._victims.pop(state.job_id, {}), **job_processes(state.shim_pid), **cgroup.processes()}
            victims.pop(state.shim_pid, None)  # the shim must live to write exit.json
            killed = signal_all(victims, signal.SIGKILL)
            log.info("job %d: SIGKILL after %gs: %s", state.job_id, self._grace_of(state), ", ".join(killed) or "none left")
            state.kill_sent_at = now
            self.save(state)
        elif state.kill_sent_at is not None and (now - state.kill_sent_at).total_seconds() >= SHIM_STUCK_S:
            log.warning("job %d: shim %d did not record the exit; killing it", state.job_id, state.shim_pid)
            try:
                signal_all({state.shim_pid: psutil.Process(state.shim_pid)}, signal.SIGKILL)
            except psutil.Error:
                pass  # it ended after all

    def _grace_of(self, state: JobState) -> float:
        return self.kill_grace_s if state.kill_grace_s is None else state.kill_grace_s

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
        if ooms := JobCgroup([Path(d) for d in state.cgroup]).oom_kills():
            limit = state.assignment.host_memory_mib
            why = f"exceeded its host_memory of {limit} MiB" if limit > 0 else "the node ran out of memory"
            detail = f"{why}: the kernel's OOM killer stopped {ooms} of its processes; {detail}"
        state.ended_at = datetime.fromisoformat(exit_info["ended_at"]) if exit_info else utcnow()
        state.message = "; ".join(filter(None, [state.intent_reason, detail, state.leftovers]))
        self.save(state)
        self._victims.pop(state.job_id, None)
        cleaned = self._clean_up(state, inventory_source)
        if cleaned:
            state.message = f"{state.message}; {cleaned}"
        if state.started_at is not None:  # a job that never ran left nothing on its devices
            in_use = self._devices_in_use(state.job_id)
            state.scrubbing = [d.uuid for d in state.assignment.devices
                               if d.uuid not in in_use and self.scrubber.command(d, state.job_id) is not None]
        log.info("job %d ended: %s (%s)", state.job_id, state.outcome, state.message)
        self._queue_ended(state)

    def _queue_ended(self, state: JobState) -> None:
        assert state.outcome is not None and state.ended_at is not None
        self.outbox.put(JobEvent(job_id=state.job_id, kind="ended", at=state.ended_at, exit_code=state.exit_code,
                                 outcome=state.outcome, message=event_message(state.message), scrubbing=state.scrubbing,
                                 run=state.assignment.run))
        state.ended_queued = True
        self.save(state)

    def _scrub(self, state: JobState) -> None:
        """Move the scrub of the job's devices on; once all are done, queue ``scrubbed``."""
        pending = [uuid for uuid in state.scrubbing if uuid not in state.scrubbed]
        done = self.scrubber.advance(state.job_id, state.assignment.devices, pending, self.store.dir(state.job_id))
        if not done:
            return
        state.scrubbed.update(done)
        for uuid, error in done.items():
            log.log(logging.WARNING if error else logging.INFO, "job %d: %s %s", state.job_id, uuid,
                    f"scrub failed: {error}" if error else "scrubbed")
        if len(state.scrubbed) == len(state.scrubbing):
            self.outbox.put(JobEvent(job_id=state.job_id, kind="scrubbed", at=utcnow(), scrubbed=[
                DeviceScrub(uuid=uuid, error=event_message(state.scrubbed[uuid])) for uuid in state.scrubbing],
                run=state.assignment.run))
            state.scrubbed_queued = True
        self.save(state)

    # ---- leftovers ----------------------------------------------------------------------

    def _clean_up(self, state: JobState, inventory_source: Callable[[], Inventory] | None) -> str:
        """Kill what the job left behind outside the shim's care; a sentence for the ended event, or ''."""
        parts = leftovers.kill_leftovers(state, self._protected)
        if state.assignment.devices and inventory_source is not None:
            taken_at = time.time()
            try:
                inventory = inventory_source()
            except Exception as exc:  # a failing collector must not stop the job from being reported
                log.warning("job %d: no inventory for the device clean-up: %s", state.job_id, exc)
            else:
                parts += leftovers.kill_on_devices(state, inventory, taken_at, self._devices_in_use(state.job_id),
                                                   self._protected, self.kill_untagged)
        return "; ".join(parts)

    def _devices_in_use(self, but: int) -> set[str]:
        return leftovers.devices_in_use(self.jobs.values(), but)
