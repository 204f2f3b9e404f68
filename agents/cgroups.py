"""A cgroup for each job: its CPU and memory limits, the device files it may open, and one
kill for all its processes.

**cgroup v2** (one hierarchy, ``/sys/fs/cgroup`` on current distributions), when its root
offers the ``cpu`` and ``memory`` controllers: the job's cgroup is
``<root>/<parent>/job-<id>`` with ``cpu.max``, ``memory.max`` (``memory.swap.max`` 0 and
``memory.oom.group`` 1 where present), killed through ``cgroup.kill``, its OOM kills counted
in ``memory.events``; device files are controlled by a BPF program attached to it
(:mod:`agents.bpf_devices`).

**cgroup v1** (a hierarchy per controller, as on older distributions, and on hybrid set-ups
that mount the controllers as v1 beside an empty v2 tree): ``<mount>/<parent>/job-<id>``
under each of ``memory``, ``cpu`` and, where mounted, ``devices``, with
``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, so swap does not stretch
it), ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` and ``devices.deny``/``devices.allow``;
OOM kills are counted in ``memory.oom_control``.

The job's command joins its cgroup between fork and exec (``agents.shim`` writes the child's
pid into each ``cgroup.procs``), so none of its processes ever runs outside it. The shim
stays outside, so that a job killed whole, or by its memory limit, never takes along the
process that records how it ended.
"""

from __future__ import annotations

import errno
import glob
import os
import signal
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from agents import bpf_devices
from agents.bpf_devices import DeviceRule

MOUNTS = Path("/proc/mounts")
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel's floor
V1_CONTROLLERS = ("memory", "cpu", "devices")
# What every process needs, as container runtimes allow it: null, zero, full, random,
# urandom, tty, console, ptmx and the pseudo-terminals.
STANDARD_DEVICES = (
    DeviceRule("c", 1, 3), DeviceRule("c", 1, 5), DeviceRule("c", 1, 7), DeviceRule("c", 1, 8), DeviceRule("c", 1, 9),
    DeviceRule("c", 5, 0), DeviceRule("c", 5, 1), DeviceRule("c", 5, 2), DeviceRule("c", 136, None),
)


class CgroupError(OSError):
    """A cgroup could not be made or set; the message names the file and the reason."""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _read_int_field(path: Path, key: str) -> int:
    """``key value`` lines (``memory.events``, ``memory.oom_control``): the value of ``key``, 0 if absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def device_rules(paths: Iterable[str]) -> list[DeviceRule]:
    """The rules that allow the device files ``paths`` (globs; symlinks followed; files that do
    not exist or are no device files allow nothing)."""
    rules: list[DeviceRule] = []
    for pattern in paths:
        for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            try:
                info = os.stat(path)
            except OSError:
                continue
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                rule = DeviceRule("c" if stat.S_ISCHR(info.st_mode) else "b", os.major(info.st_rdev), os.minor(info.st_rdev))
                if rule not in rules:
                    rules.append(rule)
    return rules


@dataclass
class JobCgroup:
    """One job's cgroup: a directory per v1 controller, or the one v2 directory. Built again
    from ``dirs`` alone after an agent restart (:attr:`agents.state.JobState.cgroup`)."""

    dirs: list[Path] = field(default_factory=list)

    @property
    def procs_files(self) -> list[str]:
        """What the job's command writes its pid into to join (each controller's ``cgroup.procs``)."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs:
            try:
                found.update(int(pid) for pid in (directory / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return found

    def processes(self) -> dict[int, psutil.Process]:
        """The live processes in the cgroup (not zombies, which wait for their parent), for
        ``agents.shim.signal_all``."""
        found = {}
        for pid in self.pids():
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found[pid] = proc
            except psutil.Error:
                continue
        return found

    def kill(self, timeout_s: float = 5.0) -> list[str]:
        """SIGKILL every process in the cgroup until it is empty (v2: ``cgroup.kill``); 'pid (name)' of each.

        A process forked meanwhile is caught by the next round. Gives up after ``timeout_s``
        (a process stuck in the kernel, in uninterruptible sleep, dies when it comes out).
        """
        killed: dict[int, str] = {}
        deadline = time.monotonic() + timeout_s
        kill_file = self.dirs[0] / "cgroup.kill" if self.dirs else None
        while (procs := self.processes()) and time.monotonic() < deadline:
            for pid, proc in procs.items():
                try:
                    killed.setdefault(pid, proc.name())
                except psutil.Error:
                    continue
            if kill_file is not None and kill_file.exists():
                _write(kill_file, "1")
            else:
                for pid in procs:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)
        return [f"{pid} ({name})" for pid, name in sorted(killed.items())]

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer ended in this cgroup for its memory limit."""
        for directory in self.dirs:
            if (directory / "memory.events").exists():
                return _read_int_field(directory / "memory.events", "oom_kill")
            if (directory / "memory.oom_control").exists():
                return _read_int_field(directory / "memory.oom_control", "oom_kill")
        return 0

    def remove(self) -> bool:
        """Remove the directories; False while a process is still in one (it stays, and is tried again)."""
        gone = True
        for directory in self.dirs:
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                gone = False
        return gone


class CgroupDriver:
    """Makes jobs' cgroups under ``<hierarchy>/<parent>``; :func:`detect` picks v1 or v2."""

    version: int
    devices_why_not: str | None  # None when device control works

    def __init__(self, parent: str) -> None:
        self.parent = parent

    @property
    def devices(self) -> bool:
        return self.devices_why_not is None

    @property
    def level(self) -> str:
        return "cgroup+devices" if self.devices else "cgroup"

    def create(self, job_id: int, cpu_cores: float, memory_mib: int, rules: Sequence[DeviceRule] | None) -> JobCgroup:
        """The job's cgroup with its limits (0: none) and, when ``rules`` is given, only those
        devices allowed (:data:`STANDARD_DEVICES` are always). A cgroup left by an earlier job
        of the same id is emptied and made again."""
        cgroup = JobCgroup(self._dirs(job_id))
        if any(d.exists() for d in cgroup.dirs):
            cgroup.kill()
            cgroup.remove()
        try:
            for directory in cgroup.dirs:
                directory.mkdir(parents=True, exist_ok=True)
            self._limit(cgroup, cpu_cores, memory_mib)
            if rules is not None:
                self._allow(cgroup, [*STANDARD_DEVICES, *rules])
        except (OSError, bpf_devices.BpfError) as exc:
            cgroup.remove()
            raise exc if isinstance(exc, CgroupError) else CgroupError(exc.errno, str(exc)) from None
        return cgroup

    def remove_parent(self) -> None:
        """Remove the parent directories where no job cgroup is left (an agent stopping leaves
        its running jobs' cgroups, and their parent, in place)."""
        for directory in {d.parent for d in self._dirs(0)}:
            try:
                directory.rmdir()
            except OSError:
                continue

    def _dirs(self, job_id: int) -> list[Path]:
        raise NotImplementedError

    def _limit(self, cgroup: JobCgroup, cpu_cores: float, memory_mib: int) -> None:
        raise NotImplementedError

    def _allow(self, cgroup: JobCgroup, rules: list[DeviceRule]) -> None:
        raise NotImplementedError


def cpu_quota_us(cpu_cores: float) -> int | None:
    """CPU time per :data:`CPU_PERIOD_US` for ``cpu_cores`` (1.5 cores: 150,000 µs); None for no limit."""
    return max(MIN_CPU_QUOTA_US, round(cpu_cores * CPU_PERIOD_US)) if cpu_cores > 0 else None


class CgroupV1(CgroupDriver):
    version = 1

    def __init__(self, mounts: dict[str, Path], parent: str) -> None:
        super().__init__(parent)
        self.mounts = mounts
        self.devices_why_not = None if "devices" in mounts else "no cgroup v1 devices controller is mounted"
        for mount in mounts.values():
            (mount / parent).mkdir(exist_ok=True)

    def describe(self) -> str:
        return "cgroup v1 (" + ", ".join(f"{c} at {m / self.parent}" for c, m in self.mounts.items()) + ")"

    def _dirs(self, job_id: int) -> list[Path]:
        return [mount / self.parent / f"job-{job_id}" for mount in self.mounts.values()]

    def _dir(self, cgroup: JobCgroup, controller: str) -> Path:
        return cgroup.dirs[list(self.mounts).index(controller)]

    def _limit(self, cgroup: JobCgroup, cpu_cores: float, memory_mib: int) -> None:
        cpu = self._dir(cgroup, "cpu")
        _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(cpu_quota_us(cpu_cores) or -1))
        if memory_mib > 0:
            memory = self._dir(cgroup, "memory")
            _write(memory / "memory.limit_in_bytes", str(memory_mib * 2**20))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_mib * 2**20))

    def _allow(self, cgroup: JobCgroup, rules: list[DeviceRule]) -> None:
        devices = self._dir(cgroup, "devices")
        _write(devices / "devices.deny", "a")
        for rule in rules:
            _write(devices / "devices.allow", f"{rule} rwm")


class CgroupV2(CgroupDriver):
    version = 2

    def __init__(self, root: Path, parent: str) -> None:
        super().__init__(parent)
        self.root = root
        self.devices_why_not = bpf_devices.probe()
        (root / parent).mkdir(exist_ok=True)
        for directory in (root, root / parent):  # the job cgroups below need both controllers
            enabled = (directory / "cgroup.subtree_control").read_text().split()
            if not {"cpu", "memory"} <= set(enabled):
                _write(directory / "cgroup.subtree_control", "+cpu +memory")

    def describe(self) -> str:
        return f"cgroup v2 at {self.root / self.parent}"

    def _dirs(self, job_id: int) -> list[Path]:
        return [self.root / self.parent / f"job-{job_id}"]

    def _limit(self, cgroup: JobCgroup, cpu_cores: float, memory_mib: int) -> None:
        [directory] = cgroup.dirs
        _write(directory / "cpu.max", f"{cpu_quota_us(cpu_cores) or 'max'} {CPU_PERIOD_US}")
        if memory_mib > 0:
            _write(directory / "memory.max", str(memory_mib * 2**20))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if (directory / name).exists():
                    _write(directory / name, value)

    def _allow(self, cgroup: JobCgroup, rules: list[DeviceRule]) -> None:
        bpf_devices.attach(cgroup.dirs[0], rules)


def _unescape(field_: str) -> str:
    """A /proc/mounts field: spaces and tabs are written as octal escapes (``\\040``)."""
    return field_.encode().decode("unicode_escape") if "\\" in field_ else field_


def cgroup_mounts(text: str) -> tuple[list[Path], dict[str, Path]]:
    """From /proc/mounts: the cgroup v2 mount points, and the v1 mount point of each controller poold uses."""
    v2: list[Path] = []
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mount, fstype, options = Path(_unescape(fields[1])), fields[2], fields[3].split(",")
        if fstype == "cgroup2":
            v2.append(mount)
        elif fstype == "cgroup":
            for controller in V1_CONTROLLERS:
                if controller in options:
                    v1.setdefault(controller, mount)
    return v2, v1


def detect(parent: str, mounts_text: str | None = None) -> tuple[CgroupDriver | None, str]:
    """The cgroup driver for this node, and a sentence for the log saying what jobs get, or
    why they get no cgroup (then they are held by their environment variables alone)."""
    if os.geteuid() != 0:
        return None, "the agent is not running as root"
    try:
        v2, v1 = cgroup_mounts(MOUNTS.read_text() if mounts_text is None else mounts_text)
        seen = []
        for root in v2:
            controllers = (root / "cgroup.controllers").read_text().split()
            seen.append(f"v2 at {root} offers {' '.join(controllers) or 'no controller'}")
            if {"cpu", "memory"} <= set(controllers):
                return _said(CgroupV2(root, parent))
        if "memory" in v1 and "cpu" in v1:
            return _said(CgroupV1({c: v1[c] for c in V1_CONTROLLERS if c in v1}, parent))
        seen.append(f"v1 mounts {', '.join(sorted(v1)) or 'none of memory, cpu'}")
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return None, f"the cgroup hierarchy is not writable: {exc}"
        return None, f"cgroups cannot be used: {exc}"
    return None, "no cgroup hierarchy with the cpu and memory controllers (" + "; ".join(seen) + ")"


def _said(driver: CgroupDriver) -> tuple[CgroupDriver, str]:
    devices = "device files limited to each job's own" if driver.devices else f"no device control ({driver.devices_why_not})"
    return driver, f"{driver.level}: each job in a cgroup of its own, {driver.describe()}; {devices}"
