"""sd_notify(3) with the standard library only: tell systemd we are ready, alive, or stopping.

``notify("READY=1")`` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or an abstract socket
written with a leading ``@``). Without the variable (not run by systemd, or Type=simple) it
does nothing and returns False; it never raises, since a lost notification must not take a
daemon down. Both the daemon and the agent use it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=registered"``); True when systemd got it."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # unset, or a vsock address this helper does not speak
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of ``WatchdogSec`` when systemd expects WATCHDOG=1 from this process, else None."""
    environ = os.environ if env is None else env
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
