"""MIG: a job that names a profile gets a slice of exactly that profile; others never get slices,
and a GPU split into slices is only allocatable through them."""

from poold.scheduler.framework import OK, PlacementRequest, Status
from poold.scheduler.view import DeviceView


class MigProfile:
    name = "mig_profile"

    def filter_device(self, request: PlacementRequest, device: DeviceView) -> Status:
        if device.has_slices:
            return Status("split_into_slices", f"{device.uuid} is split into MIG slices")
        profile = device.mig_profile
        if request.mig_profile is None:
            if profile is not None:
                return Status("mig_slice_not_asked", f"{device.uuid} is a MIG slice ({profile}); the job asks no profile")
            return OK
        if profile is None:
            return Status("not_a_mig_slice", f"{device.uuid} is not a MIG slice")
        if profile.lower() != request.mig_profile.lower():
            return Status("wrong_mig_profile", f"slice profile {profile}, {request.mig_profile} asked")
        return OK
