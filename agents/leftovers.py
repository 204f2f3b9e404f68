"""What a job leaves behind when it ends, found and killed before it is reported: processes
in its cgroup, orphans of its shim's process group or session, and processes on its devices.

Processes on a device count as the job's when their environment carries its
``POOLD_JOB_ID``; with ``kill_untagged``, any process on a device no other running job
shares goes too (not under the fake-device harness, whose process lists are made up).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from agents.cgroups import JobCgroup
from agents.shim import carries_job, job_processes, signal_all
from agents.state import JobState

if TYPE_CHECKING:
    from agents.inventory import Inventory

log = logging.getLogger(__name__)


def kill_leftovers(state: JobState, protected: set[int]) -> list[str]:
    """Empty and remove the job's cgroup, and kill orphans of its shim; a sentence for each kind found."""
    parts = []
    cgroup = JobCgroup([Path(d) for d in state.cgroup])
    if killed := cgroup.kill():
        parts.append("killed leftover processes in the job's cgroup: " + ", ".join(killed))
    if not cgroup.remove():
        log.warning("job %d: its cgroup %s could not be removed (a process in it is stuck)", state.job_id, state.cgroup)
    if state.shim_pid is not None:
        # Orphans of a shim that died early: members of its old group or session. The
        # environment check guards against the group id having been reused since.
        stragglers = {pid: proc for pid, proc in job_processes(state.shim_pid).items()
                      if pid not in protected and carries_job(proc, state.job_id)}
        if killed := signal_all(stragglers, signal.SIGKILL):
            parts.append("killed leftover processes of the job: " + ", ".join(killed))
    return parts


def devices_in_use(jobs: Iterable[JobState], but: int) -> set[str]:
    """Devices (and the GPUs of MIG slices) of the running jobs other than job ``but``."""
    devices = [d for other in jobs if other.outcome is None and other.job_id != but for d in other.assignment.devices]
    return {d.uuid for d in devices} | {d.parent_uuid for d in devices if d.parent_uuid}


def kill_on_devices(state: JobState, inventory: "Inventory", taken_at: float, in_use: set[str], protected: set[int],
                    kill_untagged: bool) -> list[str]:
    """Kill processes the inventory (taken at ``taken_at``) lists on the job's devices that carry
    its id, or any, with ``kill_untagged``, on a device none of ``in_use`` shares."""
    mine = {d.uuid for d in state.assignment.devices} | {d.parent_uuid for d in state.assignment.devices if d.parent_uuid}
    parts = []
    for device in inventory.devices:
        if device.uuid not in mine:
            continue
        shared = device.uuid in in_use or (device.parent_uuid in in_use if device.parent_uuid else False)
        victims: dict[int, psutil.Process] = {}
        for entry in device.attributes.get("processes") or []:
            pid = entry.get("pid") if isinstance(entry, dict) else None
            if not isinstance(pid, int) or pid in protected:
                continue
            try:
                proc = psutil.Process(pid)
                if proc.create_time() > taken_at:
                    continue  # started after the inventory was taken: not the one it listed
            except psutil.Error:
                continue
            if carries_job(proc, state.job_id) or (kill_untagged and not shared):
                victims[pid] = proc
        if killed := signal_all(victims, signal.SIGKILL):
            parts.append(f"killed leftover processes on {device.uuid}: " + ", ".join(killed))
    return parts
