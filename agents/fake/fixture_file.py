"""Reading fake-node fixtures: the TOML format, ``extends``, device claims and tool faults.

Standard library only: the fake vendor executables in ``bin/`` import this module by path
(they run under any Python 3.11+, outside the project's environment), and
:mod:`agents.fake` builds on it. The format itself is described in ``docs/devices.md``.

Environment variables the harness reads:

- ``POOLD_FAKE_FIXTURE``: path of the fixture file the fake executables render.
- ``POOLD_FAKE_STATE``: a directory shared by the agent, the fake devices and the jobs:
  ``procs/<device uuid>`` lists the pids that use a device (one ``pid [used_mib]`` a line),
  ``xid`` takes ``<uuid> <xid>`` lines (appended, never rewritten) that the fake NVML turns
  into XID events, each once, and ``memory/<device uuid>/`` is a device's memory: what a
  job leaves there stays until the device is scrubbed (``bin/scrub``).
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
FIXTURE_ENV = "POOLD_FAKE_FIXTURE"
STATE_ENV = "POOLD_FAKE_STATE"

#: GPU memory a claiming process uses when its line gives no figure, MiB.
DEFAULT_CLAIM_MIB = 512

_MAX_EXTENDS_DEPTH = 8


class FixtureError(ValueError):
    """A fixture that cannot be found or does not describe a node."""


def fixture_names() -> list[str]:
    """Names of the fixtures shipped in ``agents/fake/fixtures``, sorted."""
    return sorted(p.stem for p in FIXTURE_DIR.glob("*.toml"))


def resolve_fixture_path(name_or_path: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """Turn a fixture name (``"hgx-h100-mig"``) or a file path into an existing path."""
    text = os.fspath(name_or_path)
    candidates = []
    if text.endswith(".toml") or os.sep in text:
        candidates.append(Path(text) if relative_to is None else relative_to / text)
        candidates.append(Path(text))
    candidates.append(FIXTURE_DIR / f"{text}.toml")
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise FixtureError(f"no fixture named {text!r}; shipped fixtures: {', '.join(fixture_names())}")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: tables merge key by key, all else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_fixture_data(name_or_path: str | os.PathLike[str], _depth: int = 0) -> tuple[Path, dict[str, Any]]:
    """Read a fixture and everything it ``extends`` (a name, a path, or a list of them).

    Returns the fixture's own path and the merged tables; later sources win over
    earlier ones and the file itself wins over what it extends.
    """
    if _depth > _MAX_EXTENDS_DEPTH:
        raise FixtureError(f"fixture {name_or_path!s}: 'extends' nests deeper than {_MAX_EXTENDS_DEPTH}")
    path = resolve_fixture_path(name_or_path)
    try:
        own = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise FixtureError(f"fixture {path}: not valid TOML: {err}") from err
    parents = own.pop("extends", [])
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    for parent in parents:
        parent_path = resolve_fixture_path(parent, relative_to=path.parent)
        merged = deep_merge(merged, load_fixture_data(parent_path, _depth + 1)[1])
    merged = deep_merge(merged, own)
    _check_node(path, merged)
    return path, merged


def _check_node(path: Path, data: dict[str, Any]) -> None:
    node = data.get("node")
    if not isinstance(node, dict):
        raise FixtureError(f"fixture {path}: missing the [node] table")
    for key, kind in (("hostname", str), ("cpu_cores", int), ("memory_mib", int)):
        if not isinstance(node.get(key), kind):
            raise FixtureError(f"fixture {path}: node.{key} must be a {kind.__name__}")


def device_list(data: dict[str, Any], section: str, key: str) -> list[dict[str, Any]]:
    """The entries of ``[[section.key]]``, each merged over ``[section.defaults]``."""
    table = data.get(section) or {}
    defaults = table.get("defaults") or {}
    return [deep_merge(defaults, entry) for entry in table.get(key) or []]


# --- device claims: which pids "use" a fake device -------------------------------------


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The harness state directory: ``explicit``, else ``$POOLD_FAKE_STATE``, else None."""
    value = os.fspath(explicit) if explicit is not None else os.environ.get(STATE_ENV)
    return Path(value) if value else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_claims(state: Path | None, uuid: str) -> list[tuple[int, int]]:
    """``(pid, used_mib)`` of the live processes listed in ``<state>/procs/<uuid>``."""
    if state is None:
        return []
    try:
        text = (state / "procs" / uuid).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return []
    claims = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        pid = int(fields[0])
        used = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else DEFAULT_CLAIM_MIB
        if pid_alive(pid):
            claims.append((pid, used))
    return claims


def device_memory(state: Path, uuid: str) -> Path:
    """A fake device's memory, ``<state>/memory/<uuid>``: a directory any job on the device
    may write into (as any process may use a real device's memory), kept until a scrub."""
    path = state / "memory" / uuid
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)
    return path


# --- fake vendor tools -----------------------------------------------------------------


def load_for_tool(tool: str) -> dict[str, Any]:
    """The fixture named by ``$POOLD_FAKE_FIXTURE``, for a fake executable; exits 2 if unset."""
    value = os.environ.get(FIXTURE_ENV)
    if not value:
        sys.stderr.write(f"{tool}: {FIXTURE_ENV} is not set; this is the poold fake {tool}\n")
        raise SystemExit(2)
    try:
        return load_fixture_data(value)[1]
    except FixtureError as err:
        sys.stderr.write(f"{tool}: {err}\n")
        raise SystemExit(2) from err


def apply_tool_fault(data: dict[str, Any], tool: str, error_text: str) -> None:
    """Act out ``[faults] tools.<tool>``: "exit" (error, status 1), "garbage", "hang"."""
    fault = ((data.get("faults") or {}).get("tools") or {}).get(tool)
    if fault is None:
        return
    if fault == "exit":
        sys.stderr.write(error_text + "\n")
        raise SystemExit(1)
    if fault == "garbage":
        sys.stdout.write("\x1b[31m??\x1b[0m segmentation fault in libdcmi? 0xdeadbeef\n<<<>>>\n")
        raise SystemExit(0)
    if fault == "hang":
        time.sleep(3600)
        raise SystemExit(0)
    sys.stderr.write(f"{tool}: unknown fault {fault!r} in [faults] tools\n")
    raise SystemExit(2)
