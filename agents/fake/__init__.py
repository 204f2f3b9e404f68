"""The mocked-device harness: fake NVML, fake vendor tools, and fixtures of whole nodes.

Public API::

    fixture_names() -> list[str]
    load_fixture(name_or_path) -> Fixture
    FakeNvml(fixture, state=None)                 # a stand-in for the pynvml module
    FakeAmdSmi(fixture)                           # a stand-in for the amdsmi module
    make_device_files(fixture, root) -> Path | None   # the node's /dev (mknod) under root
    claim_device(uuid, pid, used_mib=None, state=None) -> Path
    release_device(uuid, pid=None, state=None)
    inject_xid(uuid, xid, state=None)
    device_memory(state, uuid) -> Path            # a fake device's memory, emptied by bin/scrub
    tool_command(tool) -> list[str]               # argv prefix running a fake executable (scrub too)
    plugin_kwargs(plugin_name, fixture, dev_root=None) -> dict | None

Environment: ``POOLD_FAKE_FIXTURE`` (fixture path, read by the fake executables) and
``POOLD_FAKE_STATE`` (shared state directory: device claims, XID injection, device memory).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from agents.fake.amdsmi import FakeAmdSmi
from agents.fake.devices import make_device_files
from agents.fake.fixture import Fixture, load_fixture
from agents.fake.fixture_file import FIXTURE_ENV, STATE_ENV, FixtureError, device_memory, fixture_names, state_dir
from agents.fake.nvml import FakeNvml

__all__ = [
    "FIXTURE_ENV", "STATE_ENV", "FakeAmdSmi", "FakeNvml", "Fixture", "FixtureError", "claim_device", "device_memory",
    "fixture_names", "inject_xid", "load_fixture", "make_device_files", "plugin_kwargs", "release_device", "tool_command",
]

BIN_DIR = Path(__file__).resolve().parent / "bin"
_TOOLS = {"ascend": ("ascend", "npu-smi"), "xilinx": ("xilinx", "xbutil"), "intel-fpga": ("intel_fpga", "fpgainfo")}


def _require_state(state: str | os.PathLike[str] | None) -> Path:
    path = state_dir(state)
    if path is None:
        raise RuntimeError(f"no fake state directory: pass state= or set {STATE_ENV}")
    return path


def claim_device(uuid: str, pid: int, used_mib: int | None = None, state: str | os.PathLike[str] | None = None) -> Path:
    """Make fake device ``uuid`` report process ``pid`` (while it lives) using ``used_mib``.

    Works for every fake device with a uuid: GPUs, MIG slices (``MIG-…``) and NPUs.
    Returns the claims file, ``<state>/procs/<uuid>``.
    """
    procs = _require_state(state) / "procs"
    procs.mkdir(parents=True, exist_ok=True)
    path = procs / uuid
    with path.open("a", encoding="utf-8") as claims:
        claims.write(f"{pid}\n" if used_mib is None else f"{pid} {used_mib}\n")
    return path


def release_device(uuid: str, pid: int | None = None, state: str | os.PathLike[str] | None = None) -> None:
    """Drop the claims of ``pid`` on ``uuid`` (all claims when ``pid`` is None)."""
    path = _require_state(state) / "procs" / uuid
    if not path.exists():
        return
    if pid is None:
        path.unlink()
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.split()[:1] != [str(pid)]]
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def inject_xid(uuid: str, xid: int, state: str | os.PathLike[str] | None = None) -> None:
    """Queue one XID event on GPU or MIG slice ``uuid`` for every fake NVML watching it."""
    path = _require_state(state)
    path.mkdir(parents=True, exist_ok=True)
    with (path / "xid").open("a", encoding="utf-8") as events:
        events.write(f"{uuid} {int(xid)}\n")


def tool_command(tool: str) -> list[str]:
    """The argv prefix that runs fake executable ``tool`` with this interpreter.

    The scripts also run on their own (``#!/usr/bin/env python3``); going through
    ``sys.executable`` skips a PATH lookup and a possible pyenv shim on every call.
    """
    script = BIN_DIR / tool
    if not script.is_file():
        raise FixtureError(f"no fake executable {tool!r} in {BIN_DIR}")
    return [sys.executable, "-I", "-S", str(script)]


def plugin_kwargs(plugin_name: str, fixture: Fixture, dev_root: str | None = None) -> dict[str, Any] | None:
    """Constructor arguments that point a vendor plugin at the harness for ``fixture``, with
    the device files of :func:`make_device_files` under ``dev_root`` (None: no device files).

    None when the fixture has no devices of that vendor (or the plugin is not one the
    harness simulates): the caller then reports the plugin as absent.
    """
    timeout = (fixture.data.get("faults") or {}).get("tool_timeout_s")
    if plugin_name in _TOOLS:
        section, tool = _TOOLS[plugin_name]
        if not fixture.has(section):
            return None
        # Intel FPGA ports are found through sysfs: the fake tree has the links, no NUMA node.
        sysfs = os.path.join(dev_root, "sys") if dev_root is not None and plugin_name == "intel-fpga" else None
        kwargs: dict[str, Any] = {"executable": tool_command(tool), "env": {FIXTURE_ENV: str(fixture.path)},
                                  "sysfs_root": sysfs, "dev_root": dev_root}
        if timeout is not None:
            kwargs["timeout_s"] = float(timeout)
        return kwargs
    if plugin_name == "amd" and fixture.has("amd"):
        return {"amdsmi": FakeAmdSmi(fixture), "dev_root": dev_root}
    return None
