"""Device scrub: the configured command for each device of an ended job, before the device
takes another job.

The agent's ``scrub`` settings map a device class to an argv: ``nvidia`` (a whole GPU),
``nvidia-mig`` (a MIG slice), and the other vendors as their devices report themselves
(``amd``, ``huawei``, ``xilinx``, ``intel``). Placeholders name the device: ``{uuid}``,
``{index}``, ``{bus_id}``, ``{parent_uuid}``, ``{vendor}``, ``{kind}``, ``{job_id}``. A device
class without a command is not scrubbed. Exit status 0 is a scrubbed device; anything else,
or a command that runs past ``scrub_timeout_s``, a failed scrub, reported with the last
line the command printed, and the daemon quarantines the device.

Order (``agents.runner``): the job ends, its leftover processes are killed, the ``ended``
event lists the devices being scrubbed (the daemon holds them out of placement: state
``scrubbing``), the commands run (each in the background, its output in the job's directory,
``scrub-<n>.log``), and a ``scrubbed`` event carries each device's result. A device another
running job still shares is left for the scrub after that job. A scrub cut short by an agent
restart runs again: scrubs must be safe to repeat.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from poold_wire.messages import AssignedDevice

log = logging.getLogger(__name__)

PLACEHOLDERS = ("uuid", "index", "bus_id", "parent_uuid", "vendor", "kind", "job_id")
"""What a scrub command may name of the device it scrubs (``{uuid}``...); the settings refuse others."""


def device_class(device: AssignedDevice) -> str:
    """The ``scrub`` key of a device: its vendor, or ``nvidia-mig`` for a MIG slice."""
    return "nvidia-mig" if device.vendor == "nvidia" and device.parent_uuid else device.vendor


class Scrubber:
    """Runs scrub commands in the background; :meth:`advance` starts and reaps them."""

    def __init__(self, commands: Mapping[str, Sequence[str]] | None = None, timeout_s: float = 600.0,
                 env: Mapping[str, str] | None = None) -> None:
        self.commands = {key: list(argv) for key, argv in (commands or {}).items()}
        self.timeout_s = timeout_s
        self.env = dict(os.environ if env is None else env)
        self._running: dict[tuple[int, str], tuple[subprocess.Popen, float, Path]] = {}

    def command(self, device: AssignedDevice, job_id: int) -> list[str] | None:
        """The argv that scrubs ``device`` after job ``job_id``; None when its class has none."""
        argv = self.commands.get(device_class(device))
        if argv is None:
            return None
        values = (device.uuid, "" if device.index is None else device.index, device.bus_id or "", device.parent_uuid or "",
                  device.vendor, device.kind, job_id)
        return [arg.format(**dict(zip(PLACEHOLDERS, values))) for arg in argv]

    def advance(self, job_id: int, devices: Sequence[AssignedDevice], pending: Sequence[str], log_dir: Path) -> dict[str, str | None]:
        """Start the scrub of each of ``pending`` (device uuids) not running yet; return the ones
        that finished: uuid -> None (scrubbed) or why the scrub failed."""
        by_uuid = {device.uuid: device for device in devices}
        position = {device.uuid: number for number, device in enumerate(devices)}
        done: dict[str, str | None] = {}
        for uuid in pending:
            key = (job_id, uuid)
            if key not in self._running:
                argv = self.command(by_uuid[uuid], job_id) if uuid in by_uuid else None
                if argv is None:
                    done[uuid] = "no scrub command for it on this node any more"
                    continue
                started = self._start(argv, log_dir / f"scrub-{position[uuid]}.log")
                if isinstance(started, str):
                    done[uuid] = started
                    continue
                self._running[key] = started
                log.info("job %d: scrubbing %s: %s", job_id, uuid, " ".join(argv))
            result = self._reap(key)
            if result is not False:
                done[uuid] = result
        return done

    def _start(self, argv: list[str], log_path: Path) -> tuple[subprocess.Popen, float, Path] | str:
        try:
            with open(log_path, "ab") as output:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                           cwd="/", env=self.env, close_fds=True, start_new_session=True)
        except OSError as exc:
            return f"cannot run {argv[0]}: {exc.strerror or exc}"
        return process, time.monotonic() + self.timeout_s, log_path

    def _reap(self, key: tuple[int, str]) -> str | None | bool:
        """None (scrubbed), the error, or False while it still runs."""
        process, deadline, log_path = self._running[key]
        code = process.poll()
        if code is None and time.monotonic() < deadline:
            return False
        del self._running[key]
        if code is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.wait()
            return f"{process.args[0]} did not finish within scrub_timeout_s ({self.timeout_s:g} s)"
        if code == 0:
            return None
        lines = log_path.read_text(errors="replace").strip().splitlines() if log_path.exists() else []
        said = f": {lines[-1].strip()[:300]}" if lines else ""
        return f"{process.args[0]} exited with status {code}{said}"
