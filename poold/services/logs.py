"""Job output shipped by agents, kept as one file per job under the daemon's state directory.

Agents append with the offset they believe the file has; a mismatch is refused with the
real size so the agent resends from there, which makes retries after a lost answer safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from poold.services import Conflict

MAX_READ_BYTES = 8 * 1024 * 1024


class OffsetMismatch(Conflict):
    def __init__(self, size: int):
        super().__init__(f"log offset mismatch: the log holds {size} bytes")
        self.size = size


def log_path(state_dir: Path, job_id: int) -> Path:
    return state_dir / "logs" / f"{job_id}.log"


def append(state_dir: Path, job_id: int, offset: int, data: bytes) -> int:
    """Append ``data`` at ``offset``; return the new size. Raises :class:`OffsetMismatch`."""
    path = log_path(state_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        size = handle.seek(0, os.SEEK_END)
        if offset != size:
            raise OffsetMismatch(size)
        handle.write(data)
        return size + len(data)


def read(state_dir: Path, job_id: int, offset: int = 0, limit: int = MAX_READ_BYTES) -> bytes:
    path = log_path(state_dir, job_id)
    if not path.exists() or offset >= path.stat().st_size:
        return b""  # past the end, however far: the file system may refuse to seek there
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(limit)
