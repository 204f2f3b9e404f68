"""The messages between a node agent and the daemon, both ways.

Compatibility: every message ignores fields it does not know, so a field may be added on
either side without a new protocol version. ``PROTOCOL_VERSION`` moves only for a change an
older peer cannot live with (a field removed, or its meaning changed); the agent sends its
version at register, and the daemon refuses, naming both, a version it cannot serve.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, Field

from poold_wire.bounds import INT32_MAX, Count32, Int32, JobId, Text, WireModel
from poold_wire.records import DeviceRecord, DeviceUuid, HostRecord

PROTOCOL_VERSION = 1
"""The agent <-> daemon protocol this code speaks. An agent that sends none speaks 1."""

NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MESSAGE_MAX = 2000  # characters of a job event's message

Outcome = Literal["succeeded", "failed", "cancelled", "timed_out", "lost"]
Isolation = Literal["env", "cgroup", "cgroup+devices"]
"""What kept a job to what it was given: ``env`` the visibility variables alone; ``cgroup`` a
cgroup of its own with its CPU and memory limits; ``cgroup+devices`` that, and only its own
device files openable."""


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A time with its zone (RFC 3339), held in UTC."""

NodeName = Annotated[str, Field(min_length=1, max_length=200, pattern=NODE_NAME_PATTERN)]
MachineId = Annotated[Text, Field(min_length=1, max_length=200)]
# Hard caps on what one message may carry, whatever a daemon's own limits (limits.* in its
# settings, at most these) allow.
MAX_DEVICES_PER_NODE = 4096
MAX_EVENTS_PER_REQUEST = 10000


# ---- agent -> daemon --------------------------------------------------------------------


class RegisterRequest(WireModel):
    node: NodeName
    host: HostRecord
    devices: list[DeviceRecord] = Field(default_factory=list, max_length=MAX_DEVICES_PER_NODE)
    agent_version: Text = Field(default="", max_length=50, description="the agent's package version")
    protocol_version: int = Field(
        default=1, ge=1, le=INT32_MAX, description="the agent's PROTOCOL_VERSION; absent means 1 (agents that predate it)"
    )
    machine_id: MachineId | None = Field(
        default=None, description="the agent's machine (/etc/machine-id): a live node's name is not given to another"
    )
    credential: Text | None = Field(
        default=None, max_length=200,
        description="at a join (a register with a join token): the token the agent made for its node, from then on the node's only one",
    )


class HeartbeatRequest(WireModel):
    host: HostRecord
    devices: list[DeviceRecord] = Field(default_factory=list, max_length=MAX_DEVICES_PER_NODE)
    running_jobs: list[JobId] = Field(default_factory=list, description="ids of the jobs the agent is running")
    machine_id: MachineId | None = Field(default=None, description="as at register; another machine's is refused")


class DeviceScrub(WireModel):
    """How the scrub of one device after a job went: ``error`` is None when it was scrubbed."""

    uuid: DeviceUuid
    error: Text | None = Field(default=None, max_length=MESSAGE_MAX)


class JobEvent(WireModel):
    """A fact about a job the agent runs. ``ended`` carries the one outcome the job will have.

    ``started`` says the isolation the job got; ``ended`` lists the devices the agent scrubs
    before they may take another job (``scrubbing``), and ``scrubbed`` how each scrub went.
    """

    job_id: JobId
    kind: Literal["started", "ended", "scrubbed"]
    at: UtcTime
    pid: Count32 | None = None
    exit_code: Int32 | None = None
    outcome: Outcome | None = None
    message: Text | None = Field(default=None, max_length=MESSAGE_MAX)
    isolation: Isolation | None = None
    scrubbing: list[DeviceUuid] = Field(default_factory=list, max_length=MAX_DEVICES_PER_NODE)
    scrubbed: list[DeviceScrub] = Field(default_factory=list, max_length=MAX_DEVICES_PER_NODE)
    run: Count32 | None = Field(
        default=None, description="the run of the job (Assignment.run) the fact is about; none from agents that predate runs"
    )


class JobEventsRequest(WireModel):
    events: list[JobEvent] = Field(max_length=MAX_EVENTS_PER_REQUEST)


# ---- daemon -> agent --------------------------------------------------------------------


class RegisterResponse(WireModel):
    node: str
    heartbeat_interval_s: float


class HeartbeatResponse(WireModel):
    ok: bool = True
    drained: bool = False


class AssignedDevice(WireModel):
    uuid: str
    kind: str
    vendor: str
    model: str
    index: int | None = None
    bus_id: str | None = None
    parent_uuid: str | None = None
    share: float = 1.0
    memory_mib: int | None = None


class GangInfo(WireModel):
    """A part of a gang (a job over several nodes): where it stands among the others.

    Added to the protocol without a version bump: an older agent ignores it and starts the
    part like any job (without the distributed-training variables)."""

    job_id: int = Field(description="the gang: the job as submitted (POOLD_GANG_ID)")
    rank: int = Field(ge=0, description="this part's rank (NODE_RANK); rank 0's node is MASTER_ADDR")
    nodes: list[str] = Field(min_length=1, description="every part's node address (its reported hostname), in rank order")
    devices_per_node: list[int] = Field(min_length=1, description="every part's device count, in rank order")
    master_port: int = Field(ge=1, le=65535, description="MASTER_PORT, unless the job's env sets its own")


class Assignment(WireModel):
    """A job the agent must start: the command and only the devices it may see."""

    job_id: int
    name: str
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    max_runtime_s: float | None = None
    devices: list[AssignedDevice] = Field(default_factory=list)
    cpu_cores: float = Field(default=0.0, description="CPU cores booked for it: its cgroup's CPU limit (0: none)")
    host_memory_mib: int = Field(default=0, description="host memory booked for it: its cgroup's memory limit (0: none)")
    run: int = Field(
        default=1, description="which run of the job this is: 1, then one more each time it was preempted and placed again "
        "(an agent that ran an earlier run of the same job id starts it afresh)",
    )
    gang: GangInfo | None = Field(default=None, description="a part of a gang: its rank and the gang's nodes (None: a job of one node)")


class StopOrder(WireModel):
    """A job the agent must stop to free its devices (preemption): SIGTERM, ``grace_s`` for it
    to end, then SIGKILL. The agent reports the end as ``cancelled``, with ``reason``."""

    job_id: int
    grace_s: float = Field(ge=0)
    reason: str = ""


class AssignmentsResponse(WireModel):
    start: list[Assignment] = Field(default_factory=list)
    cancel: list[int] = Field(default_factory=list, description="ids of running jobs to kill")
    stop: list[StopOrder] = Field(
        default_factory=list,
        description="jobs to stop with a grace of their own; each is also in `cancel`, for agents that predate `stop` "
        "(they kill it after their own kill_grace_s). An agent that knows `stop` takes it first.",
    )


class JobEventResult(WireModel):
    job_id: int
    kind: str
    accepted: bool
    reason: str | None = None


class JobEventsResponse(WireModel):
    results: list[JobEventResult]


def event_message(text: str | None) -> str | None:
    """``text`` made fit for :attr:`JobEvent.message`: NUL bytes shown as ``\\0``, cut to
    ``MESSAGE_MAX`` characters with an ellipsis. An agent's diagnostics quote what the job was
    given (a workdir, a command), which must never make its end report unsendable."""
    if text is None:
        return None
    text = text.replace("\x00", "\\0")
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"
