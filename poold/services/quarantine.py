"""Quarantine: a device reported unhealthy is out of service until it has been healthy again
for ``nodes.quarantine_s``; one that flaps stays out until an administrator returns it.

Unhealthy is whatever the agent reports as such: a critical XID, a GPU fallen off the bus,
row remapping failed, an NPU health alarm (``agents.health``, the collectors). A device's
quarantine

- starts with an unhealthy report (``quarantined_at``, ``quarantine_reason``);
- is timed once the device reports healthy again: it returns by itself at
  ``quarantine_until`` (``nodes.quarantine_s`` later; at once when that is 0), unless it
  fails again before;
- is held when the device turned unhealthy ``nodes.quarantine_flaps`` times within
  ``nodes.quarantine_flap_window_s``: it stays out until ``poold devices return UUID``.

A device whose scrub failed (``poold.services.scrub``) is held at once, healthy or not: the
last job's data may still be on it.

Placement reads a quarantined device as unhealthy (``poold.scheduler.snapshot``) and the
commit re-check refuses it; starting and ending a quarantine moves the node's generation.
These functions change one device; ``poold.services.nodes`` calls them under the node's lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from poold.db.models import DeviceModel, as_utc
from poold.services import events
from poold.settings import NodeSettings


def observe(session: Session, device: DeviceModel, was: str | None, settings: NodeSettings, now: datetime) -> None:
    """Follow a report that set ``device.health`` (``was`` before it; None for a new device)."""
    name = f"{device.model} {device.uuid}"
    if device.health != "ok":
        if was != device.health:  # turned unhealthy (or arrived so)
            window = timedelta(seconds=settings.quarantine_flap_window_s)
            recent = [t for t in device.unhealthy_reports or [] if now - as_utc(datetime.fromisoformat(t)) < window]
            device.unhealthy_reports = [*recent, now.isoformat()]
            if not device.quarantine_held:
                device.quarantine_reason = device.health_reason or "reported unhealthy"
        if device.quarantined_at is None:
            device.quarantined_at = now
            device.quarantine_reason = device.quarantine_reason or device.health_reason or "reported unhealthy"
            events.record(session, "device.quarantined", f"{name} quarantined: {device.quarantine_reason}", node_id=device.node_id)
        device.quarantine_until = None
        flaps = len(device.unhealthy_reports)
        if flaps >= settings.quarantine_flaps and not device.quarantine_held:
            device.quarantine_held = True
            device.quarantine_reason = (f"flapping: unhealthy {flaps} times within {settings.quarantine_flap_window_s:.0f} s "
                                        f"(last: {device.health_reason or 'no reason given'})")
            events.record(session, "device.quarantine_held",
                          f"{name} stays out until an administrator returns it (poold devices return {device.uuid}): "
                          f"{device.quarantine_reason}", node_id=device.node_id)
    elif was is not None and was != "ok" and device.quarantined_at is not None and not device.quarantine_held:
        device.quarantine_until = now + timedelta(seconds=settings.quarantine_s)
        if settings.quarantine_s == 0:
            release(session, device, "healthy again")
        else:
            events.record(session, "device.quarantine_timed",
                          f"{name} reports healthy again; back in service at {device.quarantine_until:%Y-%m-%d %H:%M:%S} UTC "
                          f"unless it fails before", node_id=device.node_id)


def hold(session: Session, device: DeviceModel, reason: str, now: datetime) -> None:
    """Take ``device`` out of service until an administrator returns it, because ``reason``."""
    device.quarantined_at = device.quarantined_at or now
    device.quarantine_reason, device.quarantine_until, device.quarantine_held = reason, None, True
    events.record(session, "device.quarantine_held",
                  f"{device.model} {device.uuid} stays out until an administrator returns it (poold devices return "
                  f"{device.uuid}): {reason}", node_id=device.node_id)


def release(session: Session, device: DeviceModel, why: str) -> None:
    """End ``device``'s quarantine: placement may use it again. Its flap history starts afresh
    when an administrator returns it, and ages out of the window otherwise."""
    reason = device.quarantine_reason
    device.quarantined_at = device.quarantine_until = device.quarantine_reason = None
    if device.quarantine_held:
        device.quarantine_held = False
        device.unhealthy_reports = []
    events.record(session, "device.returned", f"{device.model} {device.uuid} back in service, {why} (was: {reason})",
                  node_id=device.node_id)


def placement_note(device: DeviceModel) -> str | None:
    """Why placement must not use a device that reports healthy, or None when it may."""
    if device.quarantined_at is None or device.health != "ok":
        return None
    if device.quarantine_held:
        return f"quarantined until an administrator returns it: {device.quarantine_reason}"
    until = f" until {as_utc(device.quarantine_until):%Y-%m-%d %H:%M:%S} UTC" if device.quarantine_until else ""
    return f"quarantined{until} after: {device.quarantine_reason}"
