"""The node's identity beyond its name: the id of the machine the agent runs on.

The daemon gives a live node's name to one machine only, so two agents configured with the
same ``node_name`` cannot both feed it (the second is refused until the first's node is
lost). The id is systemd's ``/etc/machine-id`` (or D-Bus's copy), which survives reboots and
agent reinstalls; on a system without one, an id generated once and kept in the agent's
``state_dir``. ``machine_id`` in the agent's settings overrides both (tests, fakes, or
several agents on one machine under different names are fine without it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from agents.shim import atomic_write_json, read_json

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
STATE_FILE = "machine-id.json"


def machine_id(state_dir: Path, override: str | None = None, sources: Sequence[Path] = MACHINE_ID_FILES) -> str:
    """The machine id to report: ``override``, else the first readable, non-empty ``sources``
    file, else the one generated earlier in ``state_dir`` (made now if there is none)."""
    if override:
        return override
    for source in sources:
        try:
            text = source.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text
    path = Path(state_dir) / STATE_FILE
    kept = read_json(path)
    if isinstance(kept, dict) and isinstance(kept.get("machine_id"), str) and kept["machine_id"]:
        return kept["machine_id"]
    generated = uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_json(path, {"machine_id": generated})
    return generated
