"""What a job's process sees: its environment, with only its devices visible, and where it starts.

The visibility variables narrow what the vendors' runtimes show (CUDA, Ascend, ROCm, XRT):
a job gets only the ones the agent sets for it, never one inherited from the agent's own
environment, and its own ``env`` cannot widen them. They are the whole of the ``env``
isolation level; ``agents.isolation`` is what enforces more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agents.users import RunAs
from poold_wire.messages import AssignedDevice, Assignment, GangInfo

# Every variable that narrows which accelerators a process sees: a job gets only the ones
# the agent sets for it, never one inherited from the agent's own environment.
VISIBILITY_VARS = (
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "POOLD_FPGA_DEVICES",
)
# Variables of the agent's service that must not leak into a job.
SERVICE_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def visibility_env(devices: list[AssignedDevice]) -> dict[str, str]:
    """The variables that show a job its devices and nothing else.

    NVIDIA GPUs and MIG slices by uuid (``CUDA_VISIBLE_DEVICES=""`` hides every GPU), Ascend
    NPUs by index in ascending order, AMD GPUs by uuid (or index), FPGAs by PCI bus id.
    """
    nvidia = [d.uuid for d in devices if d.vendor == "nvidia"]
    npus = sorted((d.index for d in devices if d.kind == "npu" and d.index is not None))
    amd = [d.uuid if d.uuid.startswith("GPU-") or d.index is None else str(d.index)
           for d in devices if d.vendor == "amd" and d.kind == "gpu"]
    fpgas = [d.bus_id or d.uuid for d in devices if d.kind == "fpga"]
    env = {"CUDA_VISIBLE_DEVICES": ",".join(nvidia)}
    if npus:
        env["ASCEND_RT_VISIBLE_DEVICES"] = ",".join(str(index) for index in npus)
    if amd:
        env["ROCR_VISIBLE_DEVICES"] = ",".join(amd)
    if fpgas:
        env["POOLD_FPGA_DEVICES"] = ",".join(fpgas)
    return env


def gang_env(gang: GangInfo, job_env: Mapping[str, str]) -> dict[str, str]:
    """The distributed-training variables of one part of a gang, the same across its parts.

    The agent starts the command once per part (node); the variables describe the gang as
    one process per device, as ``torchrun --nproc-per-node`` starts them: ``WORLD_SIZE`` every
    device of every part, ``RANK`` the global rank of this node's first process (the devices
    of the parts before it), ``LOCAL_RANK`` 0, ``LOCAL_WORLD_SIZE`` this part's devices;
    ``NODE_RANK`` (and ``GROUP_RANK``) the part's rank, ``NNODES`` the parts,
    ``POOLD_NODES`` their addresses in rank order, ``MASTER_ADDR`` rank 0's address. The
    ``PET_*`` variables are torchrun's own defaults for its flags, so a plain ``torchrun
    train.py`` joins the gang. ``MASTER_PORT`` is the daemon's, unless the job's env sets one."""
    first = sum(gang.devices_per_node[: gang.rank])
    local = gang.devices_per_node[gang.rank] if gang.rank < len(gang.devices_per_node) else 0
    port = job_env.get("MASTER_PORT") or str(gang.master_port)
    master = gang.nodes[0]
    return {
        "POOLD_GANG_ID": str(gang.job_id), "POOLD_NODES": ",".join(gang.nodes),
        "WORLD_SIZE": str(sum(gang.devices_per_node)), "RANK": str(first), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": str(local),
        "NODE_RANK": str(gang.rank), "GROUP_RANK": str(gang.rank), "NNODES": str(len(gang.nodes)),
        "MASTER_ADDR": master, "MASTER_PORT": port,
        "PET_NNODES": str(len(gang.nodes)), "PET_NODE_RANK": str(gang.rank), "PET_NPROC_PER_NODE": str(local),
        "PET_MASTER_ADDR": master, "PET_MASTER_PORT": port,
    }


def job_env(assignment: Assignment, node: str, base: Mapping[str, str], run_as: RunAs | None = None) -> dict[str, str]:
    """The agent's environment without its service and visibility variables, then the job's
    own env, then what the agent sets (which the job cannot override): its devices, its ids,
    a gang's distributed-training variables (:func:`gang_env`), and its user's ``HOME``,
    ``USER`` and ``LOGNAME``."""
    env = {key: value for key, value in base.items()
           if key not in VISIBILITY_VARS and key not in SERVICE_VARS and not key.startswith(("POOLD_AGENT_", "POOLD_JOB_"))}
    env.update(assignment.env)
    for key in VISIBILITY_VARS:
        env.pop(key, None)
    env.update(visibility_env(assignment.devices))
    env.update(POOLD_JOB_ID=str(assignment.job_id), POOLD_JOB_NAME=assignment.name, POOLD_NODE=node)
    if assignment.gang is not None:
        env.update(gang_env(assignment.gang, assignment.env))
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    return env


def default_workdir(run_as: RunAs | None, job_dir: Path) -> str:
    """Where a job without ``workdir`` starts: its user's home if there is one, else the job's
    directory when it runs as the agent itself, else ``/`` (``nobody``'s home does not exist,
    and the job directory is the agent's alone)."""
    if run_as is None:
        return str(job_dir)
    if os.path.isdir(run_as.home):
        return run_as.home
    return str(job_dir) if run_as.uid == os.geteuid() else "/"
