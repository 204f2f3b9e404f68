"""Which job-file key a refusal names: the key behind the nearest miss of a request that
fits nowhere (a submit refused as never fitting, ``poold plan``)."""

from __future__ import annotations

from poold.scheduler.engine import TOO_FEW, TOO_FEW_NODES
from poold.scheduler.framework import Rejections

# The job-file key each reason code is about (what a refused submit names).
FIELD_OF_CODE = {
    "wrong_kind": "resources.kind",
    "model_not_accepted": "resources.accept",
    "split_into_slices": "resources.mig_profile",
    "mig_slice_not_asked": "resources.mig_profile",
    "not_a_mig_slice": "resources.mig_profile",
    "wrong_mig_profile": "resources.mig_profile",
    "no_compute_capability": "resources.compute_capability",
    "compute_capability_too_low": "resources.compute_capability",
    "wrong_fpga_shell": "resources.fpga_shell",
    "not_shareable": "resources.share",
    "insufficient_share": "resources.share",
    "memory_unknown": "resources.memory_per_device",
    "insufficient_memory": "resources.memory_per_device",
    "insufficient_cpu": "resources.cpu_cores",
    "insufficient_host_memory": "resources.host_memory",
    TOO_FEW: "resources.count",
    TOO_FEW_NODES: "resources.nodes",
    "no_nvlink": "resources.interconnect",
    "too_expensive": "resources.max_price_per_hour",
}


def blamed_field(rejections: Rejections) -> str:
    """The job-file key behind the nearest miss (``resources`` when none maps)."""
    for code, _ in rejections.ranked():
        if code in FIELD_OF_CODE:
            return FIELD_OF_CODE[code]
    return "resources"
