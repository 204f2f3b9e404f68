"""Collectors that read a vendor's command-line tool (npu-smi, xbutil, fpgainfo).

The tool is found on PATH (``shutil.which``) unless the collector is given an executable
(a path, or an argv prefix such as ``[python, script]``). A tool that is not there makes
the collector ``absent``; one that times out, exits non-zero or prints something the
parser does not understand makes it ``error``, for that collector only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from agents.collectors.base import CollectorResult
from poold_wire.records import DeviceRecord

DEFAULT_TIMEOUT_S = 10.0


class ToolError(RuntimeError):
    """The tool could not be run, timed out, or exited non-zero."""


class ToolOutputError(ValueError):
    """The tool ran but printed something the parser does not understand."""


def run_tool(argv: Sequence[str], *, timeout_s: float, env: Mapping[str, str] | None = None,
             name: str | None = None) -> str:
    """Run ``argv`` and return its standard output; raise :class:`ToolError` on failure.

    ``name`` is the tool's name in error messages (default: the executable's file name).
    """
    name = name or os.path.basename(argv[0])
    full_env = {**os.environ, **env} if env else None
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              env=full_env, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{name} timed out after {timeout_s:g} s") from None
    except OSError as err:
        raise ToolError(f"cannot run {name}: {err.strerror or err}") from None
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        detail = f": {lines[-1].strip()[:200]}" if lines else ""
        raise ToolError(f"{name} exited with status {done.returncode}{detail}")
    return done.stdout


class ToolCollector:
    """Base of the tool-driven collectors: finds and runs the tool, turns failures into status.

    Subclasses set ``name`` and ``tool_names`` (looked up on PATH in order) and implement
    :meth:`read`, which returns the devices and any host-level attributes.
    """

    name: str = ""
    tool_names: tuple[str, ...] = ()

    def __init__(self, executable: str | Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, sysfs_root: str | None = "/sys", dev_root: str | None = "/"):
        """``executable``: the tool's path or argv prefix (default: found on PATH);
        ``env``: extra environment for the tool; ``timeout_s``: per call; ``sysfs_root``:
        where to read a device's NUMA node (None: never); ``dev_root``: where ``/dev`` is
        (None: report no device files)."""
        self.executable = executable
        self.env = dict(env) if env else None
        self.timeout_s = timeout_s
        self.sysfs_root = sysfs_root
        self.dev_root = dev_root

    def command(self) -> list[str] | None:
        """The argv prefix that runs the tool, or None when it is not installed."""
        if self.executable is None:
            for tool in self.tool_names:
                found = shutil.which(tool)
                if found:
                    return [found]
            return None
        if isinstance(self.executable, str):
            return [self.executable]
        return list(self.executable)

    def run(self, command: list[str], *args: str) -> str:
        return run_tool([*command, *args], timeout_s=self.timeout_s, env=self.env, name=self.tool_names[0])

    def read(self, command: list[str]) -> tuple[list[DeviceRecord], dict[str, Any]]:
        raise NotImplementedError

    def collect(self) -> CollectorResult:
        command = self.command()
        if command is None:
            return CollectorResult.absent(f"{' or '.join(self.tool_names)} not found on PATH")
        if isinstance(self.executable, str) and not os.path.exists(self.executable):
            return CollectorResult.error(f"configured executable {self.executable} does not exist")
        try:
            devices, host_attributes = self.read(command)
        except ToolError as err:
            return CollectorResult.error(str(err))
        except ToolOutputError as err:
            return CollectorResult.error(f"{self.tool_names[0]} output not understood: {err}")
        return CollectorResult(devices=devices, host_attributes=host_attributes)
