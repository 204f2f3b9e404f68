"""HTTPS between poold's programs: how the CLI and the agents check the daemon's
certificate, and which addresses are this machine alone (plain HTTP is for those)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path


def client_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """Verify answers against ``ca_file`` (a site's own CA, as ``poold tls init`` makes one),
    else against the system's CAs; host names are checked either way."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine alone: 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
