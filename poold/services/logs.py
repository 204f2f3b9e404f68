"""Job output shipped by agents, kept as one file per job under the daemon's state directory.

Agents append with the offset they believe the file has; a mismatch is refused with the
real size so the agent resends from there, which makes retries after a lost answer safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from poold.services import Conflict, TooLarge

MAX_READ_BYTES = 8 * 1024 * 1024


class OffsetMismatch(Conflict):
    def __init__(self, size: int):
        super().__init__(f"log offset mismatch: the log holds {size} bytes")
        self.size = size


def log_path(state_dir: Path, job_id: int) -> Path:
    return state_dir / "logs" / f"{job_id}.log"


def append(state_dir: Path, job_id: int, offset: int, data: bytes, limit: int) -> int:
    """Append ``data`` at ``offset``; return the new size. Raises :class:`OffsetMismatch`, or
    :class:`TooLarge` when the log would pass ``limit`` bytes."""
    path = log_path(state_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        size = handle.seek(0, os.SEEK_END)
        if offset != size:
            raise OffsetMismatch(size)
        if size + len(data) > limit:
            raise TooLarge(f"job {job_id}'s log would pass {limit} bytes (limits.job_log_bytes); it holds {size}", field="body")
        handle.write(data)
        return size + len(data)


def read(state_dir: Path, job_id: int, offset: int = 0, limit: int = MAX_READ_BYTES) -> bytes:
    path = log_path(state_dir, job_id)
    if not path.exists() or offset >= path.stat().st_size:
        return b""  # past the end, however far: the file system may refuse to seek there
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(limit)
