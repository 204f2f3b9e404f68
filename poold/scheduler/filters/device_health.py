"""Unhealthy devices (XID, lost, vendor health alarm) take no jobs."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import DeviceView


class DeviceHealth:
    name = "device_health"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        if not device.healthy:
            return Status("device_unhealthy", f"{device.uuid} is unhealthy: {device.health_reason or 'no reason given'}")
        return OK
