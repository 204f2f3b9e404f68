"""The HTTP API's request and response bodies (pydantic), for users and agents alike.

ORM models live in ``poold.db.models`` and the engine's own types in ``poold.scheduler``;
these are only the wire format.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.record import DeviceRecord, HostRecord
from poold.jobspec import JobSpec

JobState = Literal["pending", "assigned", "running", "succeeded", "failed", "cancelled", "timed_out", "lost"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})
Outcome = Literal["succeeded", "failed", "cancelled", "timed_out", "lost"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- agents -----------------------------------------------------------------------------


class RegisterRequest(Strict):
    node: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    host: HostRecord
    devices: list[DeviceRecord] = Field(default_factory=list)
    agent_version: str = ""
    machine_id: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="the agent's machine (/etc/machine-id): a live node's name is not given to another")


class RegisterResponse(Strict):
    node: str
    heartbeat_interval_s: float


class HeartbeatRequest(Strict):
    host: HostRecord
    devices: list[DeviceRecord] = Field(default_factory=list)
    running_jobs: list[int] = Field(default_factory=list, description="ids of the jobs the agent is running")
    machine_id: str | None = Field(default=None, min_length=1, max_length=200, description="as at register; another machine's is refused")


class HeartbeatResponse(Strict):
    ok: bool = True
    drained: bool = False


class AssignedDevice(Strict):
    uuid: str
    kind: str
    vendor: str
    model: str
    index: int | None = None
    bus_id: str | None = None
    parent_uuid: str | None = None
    share: float = 1.0
    memory_mib: int | None = None


class Assignment(Strict):
    """A job the agent must start: the command and only the devices it may see."""

    job_id: int
    name: str
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    max_runtime_s: float | None = None
    devices: list[AssignedDevice] = Field(default_factory=list)


class AssignmentsResponse(Strict):
    start: list[Assignment] = Field(default_factory=list)
    cancel: list[int] = Field(default_factory=list, description="ids of running jobs to kill")


class JobEvent(Strict):
    """A fact about a job the agent runs. ``ended`` carries the one outcome the job will have."""

    job_id: int
    kind: Literal["started", "ended"]
    at: datetime
    pid: int | None = None
    exit_code: int | None = None
    outcome: Outcome | None = None
    message: str | None = Field(default=None, max_length=2000)


class JobEventsRequest(Strict):
    events: list[JobEvent]


class JobEventResult(Strict):
    job_id: int
    kind: str
    accepted: bool
    reason: str | None = None


class JobEventsResponse(Strict):
    results: list[JobEventResult]


# ---- users ------------------------------------------------------------------------------


class SubmitRequest(Strict):
    spec: JobSpec


class AllocationOut(Strict):
    device_uuid: str
    device_model: str
    kind: str
    node: str
    share: float
    memory_mib: int | None
    price_per_hour: float


class JobOut(Strict):
    id: int
    name: str
    queue: str
    priority: int
    state: JobState
    node: str | None = None
    submitted_at: datetime
    placed_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    price_per_hour: float | None = None
    reason: str | None = Field(default=None, description="why it waits, or why it went where it went")
    attempt: int = Field(default=1, description="1 as submitted; a job lost with its node is submitted again as the next attempt")
    retry_of: int | None = Field(default=None, description="the lost job this one was submitted again for")
    requeued_as: int | None = Field(default=None, description="the job submitted again for this one, after it was lost")
    allocations: list[AllocationOut] = Field(default_factory=list)
    spec: dict[str, Any] | None = None


class EventOut(Strict):
    at: datetime
    kind: str
    message: str
    job_id: int | None = None
    node: str | None = None


class JobDetail(JobOut):
    events: list[EventOut] = Field(default_factory=list)


class QuarantineOut(Strict):
    """Why a device is out of service for its health, since when, and until when."""

    since: datetime
    reason: str | None
    until: datetime | None = Field(description="when it returns by itself; null while it is unhealthy, or when held")
    held: bool = Field(description="it flapped: out until an administrator returns it (poold devices return)")


class DeviceOut(Strict):
    uuid: str
    node: str
    vendor: str
    kind: str
    model: str
    name: str
    index: int | None
    parent_uuid: str | None
    memory_total_mib: int | None
    memory_free_mib: int | None
    health: str
    health_reason: str | None
    quarantine: QuarantineOut | None = None
    allocated_share: float
    price_per_hour: float | None
    attributes: dict[str, Any]
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class NodeOut(Strict):
    name: str
    hostname: str
    state: str
    drained: bool
    drain_reason: str | None
    cpu_cores: int
    memory_total_mib: int
    devices: int
    devices_free: int
    last_heartbeat_at: datetime | None
    agent_version: str
    machine_id: str | None = None


class PlanChoice(Strict):
    """One way to place the job: where, on what, at what price, and how each scorer rated it."""

    node: str
    model: str | None
    devices: list[str] = Field(description="device uuids")
    price_per_hour: float
    speed: float
    cost_per_work: float
    locality: str | None = Field(default=None, description="how the devices connect (gangs)")
    scores: dict[str, float] = Field(description="each scorer's 0..100 and the weighted total")


class PlanRejection(Strict):
    stage: str = Field(description="the filter (or candidate generation) that turned candidates down")
    code: str
    count: int
    example: str


class PlanOut(Strict):
    """``poold plan``: where the job would go now, without submitting it."""

    placeable: bool
    reason: str
    chosen: PlanChoice | None = None
    runner_up: PlanChoice | None = None
    rejections: list[PlanRejection] = Field(default_factory=list, description="per filter, candidates turned down")
    never_fits: str | None = Field(default=None, description="why no device could hold it even on an idle pool")


class DrainRequest(Strict):
    reason: str | None = Field(default=None, max_length=500)
