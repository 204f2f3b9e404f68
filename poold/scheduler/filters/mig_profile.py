"""MIG: a job that names a profile gets a slice of exactly that profile; others never get slices,
and a GPU split into slices is only allocatable through them."""

import numpy as np

from poold.scheduler.framework import Context
from poold.scheduler.request import PlacementRequest


class MigProfile:
    name = "mig_profile"
    codes = ("split_into_slices", "mig_slice_not_asked", "not_a_mig_slice", "wrong_mig_profile")
    static = True

    def check_devices(self, request: PlacementRequest, ctx: Context, devices: np.ndarray):
        pool = ctx.pool
        profile = pool.dev_profile[devices]
        yield "split_into_slices", pool.dev_allocatable[devices]
        if request.mig_profile is None:
            yield "mig_slice_not_asked", profile < 0
            return
        yield "not_a_mig_slice", profile >= 0
        yield "wrong_mig_profile", profile == pool.profiles.find(request.mig_profile)

    def explain(self, code: str, request: PlacementRequest, ctx: Context, device: int) -> str:
        uuid, profile = ctx.pool.dev_uuid[device], ctx.pool.profile_name(device)
        return {
            "split_into_slices": f"{uuid} is split into MIG slices",
            "mig_slice_not_asked": f"{uuid} is a MIG slice ({profile}); the job asks no profile",
            "not_a_mig_slice": f"{uuid} is not a MIG slice",
            "wrong_mig_profile": f"slice profile {profile}, {request.mig_profile} asked",
        }[code]
