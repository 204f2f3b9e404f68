"""The pool as stored in SQL: nodes, devices, jobs, allocations, queues, the event log and tokens.

ORM classes end in ``Model`` so they never get mixed up with API schemas or the
scheduler's in-memory view. Times are timezone-aware UTC. Memory is MiB.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """An aware time in UTC; a naive one (SQLite hands stored times back without their zone) is taken to be UTC already."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, read back timezone-aware in UTC from every store.

    PostgreSQL keeps the zone (``timestamptz``); SQLite keeps none and hands back naive values,
    so times are written there as UTC wall clock and read with UTC attached. Every API time
    then comes out as RFC 3339 with its zone, whichever the store.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UtcDateTime()}


class QueueModel(Base):
    """A queue jobs are submitted to; higher ``priority`` queues are scheduled first.

    ``weight``, ``guarantees`` and ``limits`` are its entitlement (``poold.entitlements``):
    keys a device model, a kind or ``cost``. ``changed_by``/``changed_at`` say who last set it
    through ``poold queue``; while set, the config file no longer reseeds it
    (``poold.services.queues.sync_queues``).
    """

    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(Text, default="")
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    guarantees: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}", doc="key -> devices or cost per hour")
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}", doc="key -> devices or cost per hour")
    changed_by: Mapped[str | None] = mapped_column(String(200), doc="who last set it through the API; null: as the config says")
    changed_at: Mapped[datetime | None] = mapped_column()


class NodeModel(Base):
    """A machine with an agent. ``state`` is ``ready`` or ``lost`` (no heartbeat within
    ``nodes.timeout_s``; its jobs were ended ``lost``, and it is ``ready`` again with its next
    heartbeat).

    ``generation`` moves whenever something placement reads changes: the node's state, drain
    or capacity, its devices (what they are, health, memory used outside poold), or what is
    held on it. The scheduler reloads only nodes whose generation moved.
    """

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(20), default="ready")
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    drain_reason: Mapped[str | None] = mapped_column(Text)
    cpu_cores: Mapped[int] = mapped_column(Integer, default=0)
    memory_total_mib: Mapped[int] = mapped_column(BigInteger, default=0)
    host: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="the last HostRecord, less its usage figures")
    agent_version: Mapped[str] = mapped_column(String(50), default="")
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()
    generation: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    layout_generation: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0", doc="moves only when what the node is changes (its capacity, its devices), not what it holds"
    )
    running_jobs: Mapped[list[int]] = mapped_column(
        JSON, default=list, server_default="[]", doc="job ids the agent reported running in its last heartbeat"
    )
    machine_id: Mapped[str | None] = mapped_column(String(200), doc="the agent's machine (/etc/machine-id): who may use the name")
    report_fingerprint: Mapped[str | None] = mapped_column(
        String(32), doc="of the last report written (poold.telemetry.fingerprint_of); null: the next one must be written in full"
    )

    devices: Mapped[list["DeviceModel"]] = relationship(back_populates="node", cascade="all, delete-orphan")


class DeviceModel(Base):
    """A GPU, MIG slice, NPU or FPGA. A slice points at its whole device through ``parent_id``.

    ``present`` turns false when an agent stops reporting the device; the row stays so that
    history (allocations, events) keeps its meaning.
    """

    __tablename__ = "devices"
    # NPU and FPGA ids are built from bus ids, unique within a node only (GPU uuids are global).
    __table_args__ = (UniqueConstraint("node_id", "uuid", name="uq_devices_node_id_uuid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"), index=True)
    uuid: Mapped[str] = mapped_column(String(200), index=True)
    vendor: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))
    model: Mapped[str] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    index: Mapped[int | None] = mapped_column(Integer)
    bus_id: Mapped[str | None] = mapped_column(String(40))
    memory_total_mib: Mapped[int | None] = mapped_column(BigInteger)
    memory_outside_mib: Mapped[int | None] = mapped_column(BigInteger, doc="used by processes that are not poold jobs")
    compute_capability: Mapped[str | None] = mapped_column(String(10))
    architecture: Mapped[str | None] = mapped_column(String(40))
    numa_node: Mapped[int | None] = mapped_column(Integer)
    health: Mapped[str] = mapped_column(String(20), default="ok")
    health_reason: Mapped[str | None] = mapped_column(Text)
    quarantined_at: Mapped[datetime | None] = mapped_column(doc="out of service for its health since (poold.services.quarantine)")
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    quarantine_until: Mapped[datetime | None] = mapped_column(doc="returns by itself then; null while unhealthy or held")
    quarantine_held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), doc="until an admin returns it")
    unhealthy_reports: Mapped[list[str]] = mapped_column(
        JSON, default=list, server_default="[]", doc="when it turned unhealthy (ISO times) within the flap window"
    )
    scrubbing_since: Mapped[datetime | None] = mapped_column(doc="out of placement while its agent scrubs it (poold.services.scrub)")
    scrub_job_id: Mapped[int | None] = mapped_column(Integer, doc="the job whose end it is scrubbed after")
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    node: Mapped[NodeModel] = relationship(back_populates="devices")
    parent: Mapped["DeviceModel | None"] = relationship(remote_side="DeviceModel.id")

    @property
    def in_service(self) -> bool:
        return in_service(self.health, self.quarantined_at, self.scrubbing_since)


def in_service(health: str, quarantined_at: datetime | None, scrubbing_since: datetime | None) -> bool:
    """Whether placement may use a device: reported healthy, not quarantined, not being scrubbed."""
    return health == "ok" and quarantined_at is None and scrubbing_since is None


# jobs.id is an INTEGER column: ids past it name no job (the API and agents allow 64 bits).
MAX_JOB_ID = 2**31 - 1


class JobModel(Base):
    """A submitted job. ``spec`` is the validated job file; ``reason`` says why it waits or where it went.

    A job lost with its node is submitted again as a new job (while its ``retries`` allow):
    the new one has ``retry_of`` pointing at the lost one and the next ``attempt`` (1 for a
    job as submitted).

    A gang (a job over several nodes) is placed as its parts: one job row per node with
    ``gang_of`` naming the job as submitted and its ``gang_rank``, each with its own node and
    allocations, so everything per node (assignments, agents' reports, lost nodes, kill lists,
    scrubs) works on parts unchanged. The job as submitted holds nothing itself (no node); its
    state follows its parts (``poold.services.gangs``).
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_priority", "state", "priority"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    queue_name: Mapped[str] = mapped_column(ForeignKey("queues.name"), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    spec: Mapped[dict[str, Any]] = mapped_column()
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    price_per_hour: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    isolation: Mapped[str | None] = mapped_column(String(20), doc="what held it on its node: env, cgroup, cgroup+devices")
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    unreported_since: Mapped[datetime | None] = mapped_column(doc="running, but missing from its agent's heartbeats since")
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    gang_of: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True, doc="a part of a gang: the job as submitted, whose state follows its parts"
    )
    gang_rank: Mapped[int | None] = mapped_column(Integer, doc="a part's rank in its gang (0: the node of MASTER_ADDR)")
    owner: Mapped[str | None] = mapped_column(String(100), doc="the poold user whose token submitted it; null for jobs from before tokens")
    # Preemption (poold.services.preemption): set while a stop is asked of its agent (the job
    # is "stopping"), cleared when it is pending again; preemptions counts its runs cut short.
    preempt_requested_at: Mapped[datetime | None] = mapped_column(doc="a stop for preemption was asked of its agent then")
    preempted_by: Mapped[int | None] = mapped_column(Integer, doc="the job its devices were taken for (the last time)")
    preempt_reason: Mapped[str | None] = mapped_column(Text, doc="why it was preempted (the last time)")
    preempt_grace_s: Mapped[float | None] = mapped_column(Float, doc="seconds between SIGTERM and SIGKILL of the stop asked")
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0", doc="times it went back to pending, preempted")
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    placed_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()

    node: Mapped[NodeModel | None] = relationship()
    allocations: Mapped[list["AllocationModel"]] = relationship(back_populates="job", cascade="all, delete-orphan")


class AllocationModel(Base):
    """What a job holds on a node, active while ``released_at`` is null: a share of one device
    and its memory (``device_id`` set), or the node's CPU cores and host memory (``device_id``
    null; one such row per placed job). Node resources held are the sum of the active rows."""

    __tablename__ = "allocations"
    __table_args__ = (Index("ix_allocations_node_id_released_at", "node_id", "released_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    share: Mapped[float] = mapped_column(Float, default=1.0, doc="fraction of the device, 0 < share <= 1; 0 on the node row")
    memory_mib: Mapped[int | None] = mapped_column(BigInteger, doc="device memory held")
    cpu_cores: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    host_memory_mib: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    price_per_hour: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(index=True)
    # The device's utilisation while held, sampled from its agent's reports (poold.services.accounting).
    utilization_samples: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    utilization_pct_sum: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")

    job: Mapped[JobModel] = relationship(back_populates="allocations")
    device: Mapped["DeviceModel | None"] = relationship()


class EventModel(Base):
    """The event log: what happened to jobs, nodes and devices, in order."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(50))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TokenModel(Base):
    """A bearer token (``poold_common.tokens``), by its public id; of its secret only a digest is kept.

    ``role`` is ``admin``, ``user`` (both carry ``user_name``), ``agent`` (a node's credential,
    made by its agent at its join: ``node`` and ``machine_id`` say for which node and machine)
    or ``join`` (registers new nodes, ``uses_left`` more times). A token works while it is not
    revoked, not expired and, for a join token, has uses left.
    """

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(10))
    user_name: Mapped[str | None] = mapped_column(String(100))
    node: Mapped[str | None] = mapped_column(String(200), index=True)
    machine_id: Mapped[str | None] = mapped_column(String(200))
    uses_left: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(doc="null: until revoked (node credentials)")
    revoked_at: Mapped[datetime | None] = mapped_column()
