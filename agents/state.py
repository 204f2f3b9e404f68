"""What the agent keeps on disk, so that jobs and their outcomes survive an agent restart.

Layout under ``state_dir``::

    jobs/<id>/spec.json    what the shim runs (command, full env, workdir, user)   runner
    jobs/<id>/state.json   the job's JobState: pids, intent, outcome, log offset     runner
    jobs/<id>/shim.json    the shim's pid and start time, its first act               shim
    jobs/<id>/child.json   the command's pid, once it is started                      shim
    jobs/<id>/exit.json    how the command ended                                      shim
    jobs/<id>/output.log   the command's stdout and stderr                            job
    jobs/<id>/run-N.log    output.log of run N, kept when a later run starts here     runner
    jobs/<id>/scrub-N.log  what the scrub of its N-th device printed                  agent
    outbox/<seq>.json      job events not yet answered by the daemon, sent in order   agent
    refused.jsonl          reports the daemon refused for good, one JSON line each    agent

Every JSON file is written atomically (temporary file, fsync, rename), so a reader sees the
old content or the new, never half of it. Invariant: ``JobState.outcome`` is written once;
nothing rewrites it, and the ``ended`` event is built from it.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.shim import atomic_write_json, read_json
from poold_wire.messages import Assignment, Isolation, JobEvent, Outcome

Intent = Literal["cancelled", "timed_out"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobState(BaseModel):
    """The agent's record of one job. Times are UTC wall-clock, so they survive a restart."""

    model_config = ConfigDict(extra="forbid")

    assignment: Assignment
    node: str
    shim_pid: int | None = None
    shim_create_time: float | None = Field(default=None, description="psutil create_time: guards pid reuse")
    started_at: datetime | None = Field(default=None, description="when the command started (child.json)")
    started_queued: bool = Field(default=False, description="the started event is in the outbox (or was sent)")
    intent: Intent | None = Field(default=None, description="why the agent kills it; recorded before any signal")
    intent_reason: str | None = None
    leftovers: str | None = Field(default=None, description="processes the command left behind, stopped at its end")
    kill_grace_s: float | None = Field(default=None, description="SIGTERM to SIGKILL for this job's stop, as the daemon asked; else the agent's")
    term_sent_at: datetime | None = None
    kill_sent_at: datetime | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    message: str | None = None
    ended_at: datetime | None = None
    ended_queued: bool = Field(default=False, description="the ended event is in the outbox (or was sent)")
    log_offset: int = Field(default=0, ge=0, description="bytes of output.log the daemon has")
    log_done: bool = False
    log_base: int = Field(default=0, ge=0, description="bytes of the daemon's log earlier runs of the job wrote: where output.log starts")
    isolation: Isolation | None = Field(default=None, description="what held the job (agents.isolation)")
    isolation_note: str | None = Field(default=None, description="why it got less than the node offers")
    cgroup: list[str] = Field(default_factory=list, description="its cgroup's directories (agents.cgroups.JobCgroup)")
    scrubbing: list[str] = Field(default_factory=list, description="devices scrubbed after its end (agents.scrub)")
    scrubbed: dict[str, str | None] = Field(default_factory=dict, description="device -> None (scrubbed) or why not")
    scrubbed_queued: bool = Field(default=False, description="the scrubbed event is in the outbox (or was sent)")

    @property
    def job_id(self) -> int:
        return self.assignment.job_id

    @property
    def finished(self) -> bool:
        """Ended, reported, scrubbed, and its whole log shipped: nothing left to do but keep the dir a while."""
        scrubbed = not self.scrubbing or self.scrubbed_queued
        return self.outcome is not None and self.ended_queued and self.log_done and scrubbed


class JobStore:
    """The ``jobs/`` directory: one dir per job the agent has ever been given (until pruned)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def dir(self, job_id: int) -> Path:
        return self.root / str(job_id)

    def exists(self, job_id: int) -> bool:
        return (self.dir(job_id) / "state.json").exists()

    def create(self, state: JobState, spec: dict[str, Any]) -> Path:
        job_dir = self.dir(state.job_id)
        job_dir.mkdir(mode=0o700, exist_ok=True)
        atomic_write_json(job_dir / "spec.json", spec)
        self.save(state)
        return job_dir

    def save(self, state: JobState) -> None:
        atomic_write_json(self.dir(state.job_id) / "state.json", state.model_dump(mode="json"))

    def load_all(self) -> list[JobState]:
        states = []
        for path in sorted(self.root.glob("*/state.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1):
            data = read_json(path)
            if data is not None:
                states.append(JobState.model_validate(data))
        return states

    def read(self, job_id: int, name: str) -> dict[str, Any] | None:
        """One of the shim's files (``shim.json``, ``child.json``, ``exit.json``), or None."""
        return read_json(self.dir(job_id) / name)

    def log_path(self, job_id: int) -> Path:
        return self.dir(job_id) / "output.log"

    def clear_run(self, job_id: int, run: int) -> None:
        """Make the job's directory ready for another run: the shim's files of ``run`` go, its
        output is kept as ``run-N.log``."""
        job_dir = self.dir(job_id)
        for name in ("shim.json", "child.json", "exit.json"):
            (job_dir / name).unlink(missing_ok=True)
        if (job_dir / "output.log").exists():
            os.replace(job_dir / "output.log", job_dir / f"run-{run}.log")

    def remove(self, job_id: int) -> None:
        shutil.rmtree(self.dir(job_id), ignore_errors=True)


class Outbox:
    """Job events waiting for the daemon, persisted one file each and sent in the order queued."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "outbox"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Only the order of events still queued matters, so numbering may restart at 1
        # whenever the outbox is empty.
        self._next = max((self._seq(p) for p in self.root.glob("*.json")), default=0) + 1

    @staticmethod
    def _seq(path: Path) -> int:
        return int(path.stem) if path.stem.isdigit() else 0

    def put(self, event: JobEvent) -> None:
        atomic_write_json(self.root / f"{self._next:012d}.json", event.model_dump(mode="json"))
        self._next += 1

    def pending(self) -> list[tuple[Path, JobEvent]]:
        """Queued events, oldest first."""
        entries = []
        for path in sorted(self.root.glob("*.json"), key=self._seq):
            data = read_json(path)
            if data is None:
                continue  # unreadable only through disk damage; writes are atomic
            entries.append((path, JobEvent.model_validate(data)))
        return entries

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


class RefusalJournal:
    """``refused.jsonl``: every report the daemon refused for good (a 4xx, or an event it
    answered ``accepted: false``), with the daemon's reason, one JSON line each, oldest first.

    The agent goes on with the next report after writing the line, so one report the daemon
    will never take cannot hold up the ones behind it; the journal is where an operator finds
    what was dropped. At ``max_bytes`` the file moves to ``refused.jsonl.1`` (replacing the
    one before), so it stays bounded.
    """

    def __init__(self, state_dir: Path, max_bytes: int = 1024 * 1024) -> None:
        self.path = Path(state_dir) / "refused.jsonl"
        self.max_bytes = max_bytes

    def record(self, what: str, job_id: int, detail: str, report: dict[str, Any] | None = None) -> None:
        """Append one refusal: ``what`` was refused (``event``, ``log``), for ``job_id``, because ``detail``."""
        line = json.dumps({"at": utcnow().isoformat(), "what": what, "job_id": job_id, "detail": detail,
                           "report": report}, default=str)
        if self.path.exists() and self.path.stat().st_size > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[dict[str, Any]]:
        """The refusals in the current file, oldest first (a torn last line is skipped)."""
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries
