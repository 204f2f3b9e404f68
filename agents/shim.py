"""The job shim: one small process per job, between the agent and the job's command.

``python -m agents.shim JOB_DIR`` (as conmon or containerd-shim do for containers) starts a
new session, so the job has its own process group (group id = the shim's pid) and no
terminal; runs ``spec.json``'s command in that group, with its env and workdir, stdout and
stderr appended to ``output.log``; waits for it; writes ``exit.json`` atomically; and stays
until the last of the command's descendants is gone. Between fork and exec the command
joins the job's cgroup (``cgroup_procs``) and becomes its user (``run_as``: groups, then
group, then user), so none of its processes ever runs elsewhere or as root by mistake; the
shim stays outside the cgroup, so a job killed whole never takes its shim along. Because
the shim, not the agent, is the command's parent, the job and its exit status outlive an
agent restart. The shim ignores SIGTERM/SIGINT/SIGHUP (the agent signals the whole group)
so that it can record how the command ended; only SIGKILL stops it.

This module uses the standard library and psutil only: it starts once per job, so it must
start fast. ``agents.state`` reuses its two file helpers, and the runner its functions that
find and signal a job's processes.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import psutil

PR_SET_CHILD_SUBREAPER = 36


def atomic_write_json(path: Path, data: Any, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON, durably: temp file, fsync, rename, fsync dir.
    ``mode``: the file's permissions, set before anything is written into it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        if mode is not None:
            os.fchmod(handle.fileno(), mode)
        json.dump(data, handle, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is absent or unreadable (writes are atomic)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class LaunchError(Exception):
    """The command could not be started; the message says why, for the job's log and event."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _become_subreaper() -> None:
    """Adopt orphaned descendants (a grandchild whose parent died stays under the shim)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init, and the agent's process scan still finds them


def launch(spec: dict[str, Any], job_dir: Path, log) -> subprocess.Popen:
    """Start the command in the shim's process group; raise LaunchError with a clear reason."""
    workdir = spec.get("workdir") or str(job_dir)
    if not os.path.isdir(workdir):
        raise LaunchError(f"workdir {workdir} does not exist on this node")
    run_as, procs = spec.get("run_as"), spec.get("cgroup_procs") or []
    report_r, report_w = os.pipe()  # the child says here why it could not get ready to exec
    try:
        return subprocess.Popen(
            spec["command"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=workdir, env=spec["env"], close_fds=True,
            preexec_fn=_enter(procs, run_as, report_w) if procs or run_as else None,
        )
    except subprocess.SubprocessError:
        os.close(report_w)
        report_w = -1
        raise LaunchError(os.read(report_r, 4096).decode(errors="replace") or "the job could not be prepared") from None
    except FileNotFoundError:
        raise LaunchError(f"command not found: {spec['command'][0]}") from None
    except PermissionError as exc:
        if exc.filename == workdir:
            raise LaunchError(f"cannot enter workdir {workdir}: {exc.strerror}") from None
        raise LaunchError(f"cannot execute {spec['command'][0]}: {exc.strerror}") from None
    except OSError as exc:
        raise LaunchError(f"cannot start {spec['command'][0]}: {exc}") from None
    finally:
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)


def _enter(cgroup_procs: list[str], run_as: dict[str, Any] | None, report: int):
    """What the child does between fork and exec: join the cgroup, then drop to the job's user."""

    def enter() -> None:
        step = "join the job's cgroup"
        try:
            pid = str(os.getpid()).encode()
            for path in cgroup_procs:
                step = f"join the job's cgroup ({path})"
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
            if run_as:
                step = f"become user {run_as['name']}"
                os.setgroups(run_as["groups"])
                os.setgid(run_as["gid"])
                os.setuid(run_as["uid"])
        except OSError as exc:
            os.write(report, f"cannot {step}: {exc.strerror}".encode())
            raise

    return enter


def supervise(child: int, exit_path: Path) -> None:
    """Reap children: write ``exit_path`` when ``child`` ends, then stay while any descendant
    lives (orphans come to the shim, a subreaper), so the agent can still find and kill the
    job's leftovers through the shim before it reports the job ended."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if reaped == child:
            atomic_write_json(exit_path, exit_record(status))


def exit_record(status: int) -> dict[str, Any]:
    """``exit_code`` as a shell reports it (128 + n for signal n), and the signal if any."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {"exit_code": 128 + sig, "signal": sig, "error": None, "ended_at": _now()}
    return {"exit_code": os.waitstatus_to_exitcode(status), "signal": None, "error": None, "ended_at": _now()}


# ---- the job's processes, as the agent finds and signals them ---------------------------


def carries_job(proc: psutil.Process, job_id: int) -> bool:
    """Whether the process's environment (``/proc/<pid>/environ``) says it belongs to the job."""
    try:
        return proc.environ().get("POOLD_JOB_ID") == str(job_id)
    except (psutil.Error, OSError):
        return False


def job_processes(shim_pid: int) -> dict[int, psutil.Process]:
    """The shim's descendants and every member of its session or process group, shim excluded.

    Only meaningful while the shim lives: its pid is then in use, so no unrelated process can
    hold it as a group or session id. Catches children that called setsid (descendants) and
    orphans of the group (group members).
    """
    found: dict[int, psutil.Process] = {}
    try:
        found.update((child.pid, child) for child in psutil.Process(shim_pid).children(recursive=True))
    except psutil.Error:
        pass
    for pid in psutil.pids():
        if pid == shim_pid or pid in found:
            continue
        try:
            if os.getpgid(pid) == shim_pid or os.getsid(pid) == shim_pid:
                found[pid] = psutil.Process(pid)
        except (OSError, psutil.Error):
            continue
    return found


def signal_all(procs: Mapping[int, psutil.Process], signum: int) -> list[str]:
    """Send ``signum`` to each process still alive (psutil refuses a reused pid); 'pid (name)' of each hit."""
    hit = []
    for proc in procs.values():
        try:
            name = proc.name()
            proc.send_signal(signum)
            hit.append(f"{proc.pid} ({name})")
        except psutil.Error:
            continue
    return hit


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m agents.shim JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(args[0])
    if os.getsid(0) != os.getpid():
        os.setsid()
    _become_subreaper()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # A handler, not SIG_IGN: handlers are reset on exec, so the command still dies by them.
        signal.signal(signum, lambda *_: None)
    atomic_write_json(job_dir / "shim.json", {"pid": os.getpid(), "create_time": psutil.Process().create_time()})
    spec = read_json(job_dir / "spec.json")
    with open(job_dir / "output.log", "ab", buffering=0) as log:
        try:
            if spec is None:
                raise LaunchError(f"{job_dir / 'spec.json'} is missing or unreadable")
            child = launch(spec, job_dir, log)
        except LaunchError as exc:
            log.write(f"poold: cannot start the job: {exc}\n".encode())
            atomic_write_json(job_dir / "exit.json", {"exit_code": None, "signal": None, "error": str(exc), "ended_at": _now()})
            return 0
    atomic_write_json(job_dir / "child.json", {"pid": child.pid, "started_at": _now()})
    supervise(child.pid, job_dir / "exit.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
