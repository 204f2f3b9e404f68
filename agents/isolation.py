"""What holds a job to what it was given, and the level it got: ``env``, ``cgroup`` or
``cgroup+devices`` (reported in the job's ``started`` event; docs/jobs.md, "Isolation").

- ``env``: the visibility variables alone (``agents.job_env``). The agent is
  not root, the kernel offers no usable cgroup hierarchy, or ``isolation = "env"``.
- ``cgroup``: a cgroup of its own (``agents.cgroups``): CPU limited to its ``cpu_cores``,
  memory to its ``host_memory`` (each only where booked), all its processes killed at once
  at a cancel and at its end.
- ``cgroup+devices``: that, and only its own devices' files openable (those its collector
  names, ``attributes["device_files"]``), besides the standard ones (null, zero, tty...)
  and the node's ``shared_device_files``.

A node that offers device control still gives a job ``cgroup`` alone when the files of one
of its devices are not known (no device control beats a job locked out of its own device),
and ``env`` when its cgroup cannot be made; the ``started`` event then says why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agents import cgroups
from agents.cgroups import CgroupDriver, CgroupError, JobCgroup
from poold_wire.messages import Assignment, Isolation
from poold_wire.records import DeviceRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Confinement:
    """One job's isolation: its level, its cgroup (None at ``env``), and why it got less than
    the node offers (None when it got all of it)."""

    level: Isolation
    cgroup: JobCgroup | None = None
    note: str | None = None


class Isolations:
    """The node's isolation: a cgroup driver (None: ``env`` only) and what every job may open."""

    def __init__(self, driver: CgroupDriver | None = None, why: str = "no cgroups asked for",
                 shared_device_files: Sequence[str] = ()) -> None:
        self.driver = driver
        self.why = why
        self.shared_device_files = tuple(shared_device_files)

    @classmethod
    def from_settings(cls, settings) -> "Isolations":
        """``isolation = "auto"``: whatever this node's kernel and the agent's rights allow."""
        if settings.isolation == "env":
            driver, why = None, 'env: isolation = "env" in the agent\'s settings'
        else:
            driver, found = cgroups.detect(settings.cgroup_parent)
            why = found if driver is not None else f"env: {found}"
        log.info("job isolation: %s", why)
        return cls(driver, why, settings.shared_device_files)

    def close(self) -> None:
        """The agent stops: remove the jobs' parent cgroup if no job's cgroup is left in it."""
        if self.driver is not None:
            self.driver.remove_parent()

    @property
    def level(self) -> Isolation:
        return "env" if self.driver is None else self.driver.level  # type: ignore[return-value]

    def confine(self, assignment: Assignment, records: Mapping[str, DeviceRecord]) -> Confinement:
        """Make the job's cgroup, with its limits and, where the node can, its device files.
        ``records``: the latest inventory's devices by uuid (their ``device_files``)."""
        if self.driver is None:
            return Confinement("env")
        rules, note = None, None
        if self.driver.devices:
            files: list[str] = []
            unknown = []
            for device in assignment.devices:
                record = records.get(device.uuid)
                listed = record.attributes.get("device_files") if record is not None else None
                if listed:
                    files += listed
                else:
                    unknown.append(device.uuid)
            if unknown:
                note = f"no device control: the device files of {', '.join(unknown)} are not known on this node"
            else:
                rules = cgroups.device_rules([*files, *self.shared_device_files])
        try:
            cgroup = self.driver.create(assignment.job_id, assignment.cpu_cores, assignment.host_memory_mib, rules)
        except CgroupError as exc:
            log.warning("job %d: no cgroup, isolation env: %s", assignment.job_id, exc)
            return Confinement("env", None, f"no cgroup: {exc}")
        return Confinement("cgroup+devices" if rules is not None else "cgroup", cgroup, note)
