"""The HTTP API's request and response bodies (pydantic) for users and admins.

What agents and the daemon send each other lives in the leaf package ``poold_wire``; ORM
models live in ``poold.db.models`` and the engine's own types in ``poold.scheduler``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from poold.entitlements import Amount, EntitlementFields
from poold.jobspec import JobSpec
from poold.services.tokens import MAX_EXPIRY_S, MAX_JOIN_USES, USER_NAME_PATTERN
from poold_common.tokens import IssuedRole
from poold_wire.bounds import Text
from poold_wire.messages import Isolation

JobState = Literal["pending", "assigned", "running", "succeeded", "failed", "cancelled", "timed_out", "lost"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    isolation: Isolation | None = Field(
        default=None, description="what held it on its node (env, cgroup, cgroup+devices; docs/jobs.md, Isolation); null before it started"
    )
    price_per_hour: float | None = None
    reason: str | None = Field(default=None, description="why it waits, or why it went where it went")
    attempt: int = Field(default=1, description="1 as submitted; a job lost with its node is submitted again as the next attempt")
    retry_of: int | None = Field(default=None, description="the lost job this one was submitted again for")
    requeued_as: int | None = Field(default=None, description="the job submitted again for this one, after it was lost")
    allocations: list[AllocationOut] = Field(default_factory=list)
    preemptions: int = Field(default=0, description="times it was preempted and went back to pending")
    preempted_by: int | None = Field(default=None, description="the job its devices were last taken for")
    preempt_reason: str | None = Field(default=None, description="why it was last preempted")
    stopping: bool = Field(default=False, description="placed, and being stopped by its agent for a preemption")
    owner: str | None = Field(default=None, description="the poold user who submitted it (null: submitted before tokens)")
    spec: dict[str, Any] | None = None
    hidden: list[str] = Field(default_factory=list, description="what is withheld from this caller: `spec.env` of another user's job")
    gang_of: int | None = Field(default=None, description="a part of a gang: the job as submitted (docs/jobs.md, Gangs)")
    gang_rank: int | None = Field(default=None, description="a part of a gang: its rank (NODE_RANK)")


class PartOut(Strict):
    """One part of a gang: the job that runs it on one node."""

    id: int
    rank: int
    node: str | None
    state: JobState
    exit_code: int | None = None
    devices: int = Field(description="devices it holds (held) on its node")


class EventOut(Strict):
    """One entry of the event log (``GET /events``, and a job's own in ``GET /jobs/{id}``)."""

    id: int = Field(description="its place in the log: later events have larger ids")
    at: datetime
    kind: str = Field(description="what happened, `family.what`: job.waiting, node.lost, device.quarantined")
    message: str
    job_id: int | None = None
    node: str | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="the event's figures as recorded, by kind")


class JobDetail(JobOut):
    events: list[EventOut] = Field(default_factory=list)
    parts: list[PartOut] = Field(default_factory=list, description="a gang's parts by rank, once placed (empty for other jobs)")


class QuarantineOut(Strict):
    """Why a device is out of service for its health, since when, and until when."""

    since: datetime
    reason: str | None
    until: datetime | None = Field(description="when it returns by itself; null while it is unhealthy, or when held")
    held: bool = Field(description="it flapped: out until an administrator returns it (poold devices return)")


class ScrubbingOut(Strict):
    """A device out of placement while its agent scrubs it after a job's end."""

    since: datetime
    job_id: int | None = Field(description="the job whose end it is scrubbed after")


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
    scrubbing: ScrubbingOut | None = None
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
    devices: int = Field(description="whole devices present (GPUs, NPUs, FPGAs; a GPU in MIG mode is one, its slices are not counted here)")
    devices_free: int = Field(description="whole devices in service with nothing held on them or on their MIG slices")
    slices: int = Field(description="MIG slices present")
    slices_free: int = Field(description="MIG slices in service with nothing held on them")
    last_heartbeat_at: datetime | None
    agent_version: str
    machine_id: str | None = None
    network: str | None = Field(default=None, description="the network label its agent reports (a gang's parts keep to one)")


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
    parts: list[PlanChoice] = Field(default_factory=list, description="a gang: each part's placement by rank (chosen is rank 0)")
    rejections: list[PlanRejection] = Field(default_factory=list, description="per filter, candidates turned down")
    never_fits: str | None = Field(default=None, description="why no device could hold it even on an idle pool")


class DrainRequest(Strict):
    reason: Text | None = Field(default=None, max_length=500)


# ---- queues -----------------------------------------------------------------------------

QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class QueueOut(Strict):
    """A queue as stored: its entitlement (docs/queues.md) and who last set it."""

    name: str
    priority: int
    description: str
    weight: float
    guarantee: dict[str, float] = Field(description="devices by model or kind, or `cost` per hour")
    limit: dict[str, float] = Field(description="devices by model or kind, or `cost` per hour")
    in_config: bool = Field(description="the config file names it (and reseeds it at start unless changed_by is set)")
    changed_by: str | None = Field(default=None, description="who last set it through the API; null: as the config file says")
    changed_at: datetime | None = None


class QueueUsageOut(QueueOut):
    devices: dict[str, float] = Field(description="whole devices its placed jobs hold, by model (a MIG slice counts its part)")
    cost_per_hour: float = Field(description="what its placed jobs cost per hour")
    placed: int = Field(description="its jobs assigned or running")
    stopping: int = Field(description="of those, being stopped for a preemption")
    pending: int
    oldest_pending_at: datetime | None = Field(default=None, description="when its longest-waiting pending job was submitted")
    oldest_wait_s: float | None = Field(default=None, description="how long that job has waited, in seconds")


class WhyPlace(Strict):
    position: int = Field(description="1: the next of its queue's pending jobs, in the planner's order (priority, then age, then id)")
    ahead: int = Field(description="its queue's pending jobs before it in that order")
    pending: int = Field(description="its queue's pending jobs")


class WhyReservation(Strict):
    start_at: datetime = Field(description="when the devices are kept for it from (UTC)")
    nodes: list[str]
    devices: list[str] = Field(description="device uuids")
    why: str


class WhyFallback(Strict):
    model: str = Field(description="a model of its accept list with an `after`")
    opens_at: datetime = Field(description="submitted_at + after (UTC): the model is acceptable from then")
    open: bool


class WhyPending(Strict):
    """Why a pending job waits."""

    place: WhyPlace
    queue: QueueUsageOut = Field(description="its queue's usage against its entitlement")
    under_guarantee: list[str] = Field(description="guarantee keys its queue holds less of than guaranteed (served first while any)")
    now: PlanOut = Field(description="`poold plan` of it on the pool now, narrowed to the accept entries open after its wait; "
                                     "rejections nearest misses first")
    reservation: WhyReservation | None = Field(default=None, description="devices the last pass on this replica kept for it")
    reservation_note: str | None = Field(default=None, description="why there is no reservation to show")
    fallbacks: list[WhyFallback] = Field(default_factory=list)


class WhyPlacement(Strict):
    """The placement's score breakdown as its pass recorded it."""

    placed_at: datetime
    node: str | None = None
    chosen: PlanChoice | None = None
    runners_up: list[PlanChoice] = Field(default_factory=list)
    parts: list[PlanChoice] = Field(default_factory=list, description="a gang: each part by rank")
    note: str | None = Field(default=None, description="why there is no breakdown (placed before poold recorded one)")


class WhyPreemption(Strict):
    times: int = Field(description="runs cut short by preemption")
    by_job_id: int | None = Field(default=None, description="the job its devices were taken for (the last time)")
    by_queue: str | None = None
    reason: str | None = None
    stopping: bool = Field(description="its agent is stopping it now")
    requested_at: datetime | None = Field(default=None, description="when the stop was asked (while stopping)")
    last_preempted_at: datetime | None = Field(default=None, description="when it was last stopped and put back to pending")


class WhyOut(Strict):
    """``poold why``: why a job waits, why it was placed where it was, or who preempted it."""

    job_id: int
    name: str
    state: JobState
    queue: str
    priority: int
    submitted_at: datetime
    reason: str | None = Field(default=None, description="the reason stored with the job")
    pending: WhyPending | None = None
    placement: WhyPlacement | None = None
    preemption: WhyPreemption | None = None


class QueueCreate(EntitlementFields):
    name: str = Field(min_length=1, max_length=100, pattern=QUEUE_NAME_PATTERN)
    priority: int = Field(default=0, ge=-1000, le=1000)
    description: Text = Field(default="", max_length=500)


class QueueUpdate(Strict):
    """What to change; fields left out stay. In guarantee and limit, a key set to null is removed."""

    priority: int | None = Field(default=None, ge=-1000, le=1000)
    description: Text | None = Field(default=None, max_length=500)
    weight: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    guarantee: dict[str, Amount | None] | None = None
    limit: dict[str, Amount | None] | None = None
    from_config: bool = Field(default=False, description="hand the queue back to the config file (no other field may be given)")


# ---- admins: tokens ---------------------------------------------------------------------


class TokenCreate(Strict):
    role: IssuedRole
    user: str | None = Field(default=None, min_length=1, max_length=100, pattern=USER_NAME_PATTERN,
                             description="whom an admin or user token is for (a job's owner is its submitter's user)")
    expires_in_s: int | None = Field(default=None, ge=1, le=MAX_EXPIRY_S, description="default 90 days; 1 hour for a join token")
    uses: int | None = Field(default=None, ge=1, le=MAX_JOIN_USES, description="nodes a join token may bring (default 1)")
    note: Text = Field(default="", max_length=500, description="what it is for")


class TokenOut(Strict):
    """A token as lists show it: never its secret."""

    id: str
    role: str
    state: Literal["valid", "revoked", "expired", "used up"]
    user: str | None = None
    node: str | None = Field(default=None, description="a node's credential: the node")
    machine_id: str | None = Field(default=None, description="a node's credential: the machine it joined from")
    uses_left: int | None = Field(default=None, description="a join token: nodes it may still bring")
    note: str = ""
    created_by: str
    created_at: datetime
    expires_at: datetime | None = Field(description="null: until revoked (a node's credential)")
    revoked_at: datetime | None = None


class TokenIssued(TokenOut):
    token: str = Field(description="the token itself, shown this once: only a digest of it is kept")


# ---- the pool at a glance, and its accounts ------------------------------------------------


class MigCountOut(Strict):
    total: int
    free: int = Field(description="in service, nothing held")


class ModelOverviewOut(Strict):
    model: str
    kind: str
    devices: int = Field(description="whole devices (a GPU split into MIG slices counts once)")
    in_service: int = Field(description="healthy, not quarantined or scrubbed, on a ready node")
    free: int = Field(description="in service on an undrained node, nothing held on it or its slices")
    allocated: float = Field(description="held, in whole devices (a share its fraction, a MIG slice its slices of 7)")
    memory_total_mib: int
    memory_allocated_mib: int
    mig: dict[str, MigCountOut] = Field(description="MIG slices by profile")
    price_per_hour: float = Field(description="of one whole device")
    fragmentation: float | None = Field(
        description="share of free capacity the recent job mix cannot use (0..1); null on a daemon that does not schedule, or a model no recent job asks for"
    )
    utilization_pct: float | None = Field(description="mean of the agents' latest utilisation figures heard by this daemon")


class PoolOut(Strict):
    at: datetime
    models: list[ModelOverviewOut]


class UsageRowOut(Strict):
    key: str = Field(description="the queue, user, model or job id the row sums")
    jobs: int
    device_hours: dict[str, float] = Field(description="whole-device hours by model")
    cost: float = Field(description="price x time held, in the prices' currency")
    utilization_pct: float | None = Field(description="mean device utilisation while held, from the agents' samples")
    samples: int
    # With by=job, the job's own facts:
    job_id: int | None = None
    name: str | None = None
    owner: str | None = None
    queue: str | None = None
    state: JobState | None = None
    held_hours: float | None = None
    price_per_hour: float | None = Field(default=None, description="what it accrues per hour now (0 once it holds nothing)")


class UsageOut(Strict):
    by: Literal["queue", "user", "model", "job"]
    since: datetime | None
    at: datetime
    rows: list[UsageRowOut]
