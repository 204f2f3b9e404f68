"""Accounting: who held what, for how long, at what cost, and how much of it they used.

Everything is read from the allocations: each row holds a share of one device (or a node's
CPU cores and memory) at a price per hour from ``created_at`` until ``released_at`` (null:
still held). So, for a job and a window [since, now]:

    held time    = the union of its allocations' intervals, clipped to the window (hours)
    device-hours = Σ whole-device units held × hours, by model (a share counts its fraction,
                   a MIG slice its slices of 7, as prices count it)
    cost         = Σ price_per_hour × hours        (the price was fixed when it was placed)

Utilisation while held comes from the agents' reports: every ``accounting.sample_s`` each
daemon adds the latest utilisation its agents reported for each held device (figures younger
than one sample interval only) to the allocation's ``utilization_pct_sum`` and
``utilization_samples`` (:func:`sample_utilization`); a job's utilisation is the mean of its
samples. A gang is accounted as the job that was submitted: its parts' rows count for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from poold.db.models import AllocationModel, DeviceModel, JobModel, NodeModel, as_utc, utcnow
from poold.services.queue_usage import whole_devices
from poold.telemetry import NodeReports

GROUPINGS = ("queue", "user", "model", "job")
NO_OWNER = "(none)"  # jobs from before tokens
CPU_ONLY = "(cpu only)"  # the model key of jobs that held no device


@dataclass
class JobUsage:
    """One job's account within a window (see the module docstring). ``price_per_hour`` is
    what it accrues per hour now (0.0 once it holds nothing)."""

    job_id: int
    name: str
    owner: str | None
    queue: str
    state: str
    submitted_at: datetime
    held_hours: float = 0.0
    device_hours: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    price_per_hour: float = 0.0
    utilization_pct: float | None = None
    samples: int = 0
    _utilization_sum: float = 0.0


@dataclass
class UsageRow:
    """The accounts of jobs summed by one key (a queue, a user, a model or a job)."""

    key: str
    jobs: int = 0
    device_hours: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    utilization_pct: float | None = None
    samples: int = 0
    _utilization_sum: float = 0.0


def job_usage(
    session: Session, *, since: datetime | None = None, now: datetime | None = None,
    states: Collection[str] | None = None, job_ids: Collection[int] | None = None,
) -> list[JobUsage]:
    """The account of every job that held something within [since, now], newest first;
    ``states`` and ``job_ids`` narrow it to jobs as submitted in those states, or with those ids."""
    now = now or utcnow()
    account = func.coalesce(JobModel.gang_of, JobModel.id)
    query = (
        select(account, AllocationModel.share, AllocationModel.price_per_hour, AllocationModel.created_at,
               AllocationModel.released_at, AllocationModel.utilization_samples, AllocationModel.utilization_pct_sum,
               DeviceModel.model, DeviceModel.attributes)
        .join(JobModel, JobModel.id == AllocationModel.job_id)
        .outerjoin(DeviceModel, DeviceModel.id == AllocationModel.device_id)
        .where(AllocationModel.created_at <= now)
    )
    if since is not None:
        query = query.where((AllocationModel.released_at.is_(None)) | (AllocationModel.released_at > since))
    if job_ids is not None:
        query = query.where(account.in_(list(job_ids)))
    if states is not None:
        # A first cut in SQL (a gang's parts are in its state, but for one that ended before the
        # others: left out of its running gang's account); exact in _fill_jobs.
        query = query.where(JobModel.state.in_(list(states)))
    intervals: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    accounts: dict[int, JobUsage] = {}
    for job_id, share, price, created, released, samples, utilization, model, attributes in session.execute(query):
        start = max(as_utc(created), since) if since is not None else as_utc(created)
        end = min(as_utc(released), now) if released is not None else now
        hours = max((end - start).total_seconds(), 0.0) / 3600.0
        usage = accounts.setdefault(job_id, _blank(job_id))
        intervals[job_id].append((start, end))
        usage.cost += (price or 0.0) * hours
        if released is None:
            usage.price_per_hour += price or 0.0
        if model is not None:
            usage.device_hours[model] = usage.device_hours.get(model, 0.0) + whole_devices(share, attributes) * hours
            usage.samples += samples
            usage._utilization_sum += utilization
    _fill_jobs(session, accounts, states)
    for job_id, usage in accounts.items():
        usage.held_hours = _union_hours(intervals[job_id])
        usage.utilization_pct = usage._utilization_sum / usage.samples if usage.samples else None
    return sorted(accounts.values(), key=lambda usage: usage.job_id, reverse=True)


def summarise(rows: Iterable[JobUsage], by: str) -> list[UsageRow]:
    """Job accounts summed by ``by`` (one of ``GROUPINGS``), costliest first. By model, a job
    counts under each model it held (its cost split by device-hours; a job that held no
    device counts under ``CPU_ONLY``)."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    grouped: dict[str, UsageRow] = {}
    for usage in rows:
        for key, fraction in _keys(usage, by):
            row = grouped.setdefault(key, UsageRow(key))
            row.jobs += 1
            row.cost += usage.cost * fraction
            for model, hours in usage.device_hours.items():
                if by != "model" or model == key:
                    row.device_hours[model] = row.device_hours.get(model, 0.0) + hours
            row.samples += usage.samples
            row._utilization_sum += usage._utilization_sum
    for row in grouped.values():
        row.utilization_pct = row._utilization_sum / row.samples if row.samples else None
    return sorted(grouped.values(), key=lambda row: (-row.cost, row.key))


def cost_by_queue(session: Session, now: datetime | None = None) -> dict[str, float]:
    """Each queue's accrued cost since the store began (price × time held, every allocation)."""
    now = now or utcnow()
    totals: dict[str, float] = defaultdict(float)
    rows = session.execute(
        select(JobModel.queue_name, AllocationModel.price_per_hour, AllocationModel.created_at, AllocationModel.released_at)
        .join(JobModel, JobModel.id == AllocationModel.job_id)
        .where(AllocationModel.price_per_hour > 0)
    )
    for queue, price, created, released in rows:
        end = as_utc(released) if released is not None else now
        totals[queue] += price * max((end - as_utc(created)).total_seconds(), 0.0) / 3600.0
    return dict(totals)


def sample_utilization(session: Session, reports: NodeReports, interval_s: float) -> int:
    """Add the latest utilisation reported to this daemon for each held device (figures no
    older than ``interval_s``) to its allocation's samples; returns how many were added."""
    fresh_after = utcnow() - timedelta(seconds=interval_s)
    rows = session.execute(
        select(AllocationModel.id, NodeModel.name, DeviceModel.uuid)
        .join(DeviceModel, DeviceModel.id == AllocationModel.device_id)
        .join(NodeModel, NodeModel.id == AllocationModel.node_id)
        .where(AllocationModel.released_at.is_(None))
    )
    samples = []
    for allocation_id, node, uuid in rows:
        figures = reports.usage(node)
        if figures is None or figures.at < fresh_after:
            continue
        value = figures.devices.get(uuid, {}).get("utilization_pct")
        if value is not None:
            samples.append({"allocation_id": allocation_id, "value": min(max(float(value), 0.0), 100.0)})
    if samples:
        table = AllocationModel.__table__  # a Core statement: one executemany, no ORM bulk-by-key
        session.execute(
            update(table)
            .where(table.c.id == bindparam("allocation_id"))
            .values(utilization_samples=table.c.utilization_samples + 1, utilization_pct_sum=table.c.utilization_pct_sum + bindparam("value")),
            samples,
        )
    return len(samples)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A window's start from ``7d``, ``24h``, ``30m``, ``90s`` (that long before ``now``) or an
    ISO 8601 time (UTC when it names no zone); ValueError saying what is accepted otherwise."""
    now = now or utcnow()
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip()
    if text[-1:] in units and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (7d, 24h, 30m, 90s) nor an ISO 8601 time") from None


def _blank(job_id: int) -> JobUsage:
    return JobUsage(job_id=job_id, name="", owner=None, queue="", state="", submitted_at=utcnow())


def _fill_jobs(session: Session, accounts: dict[int, JobUsage], states: Collection[str] | None) -> None:
    """Name, owner, queue and state of each account's job as submitted; accounts of jobs
    outside ``states`` are dropped."""
    ids = list(accounts)
    for start in range(0, len(ids), 1000):
        query = select(JobModel.id, JobModel.name, JobModel.owner, JobModel.queue_name, JobModel.state, JobModel.submitted_at)
        for job_id, name, owner, queue, state, submitted in session.execute(query.where(JobModel.id.in_(ids[start:start + 1000]))):
            usage = accounts[job_id]
            usage.name, usage.owner, usage.queue, usage.state, usage.submitted_at = name, owner, queue, state, submitted
    if states is not None:
        for job_id in [job_id for job_id, usage in accounts.items() if usage.state not in states]:
            del accounts[job_id]


def _keys(usage: JobUsage, by: str) -> list[tuple[str, float]]:
    """The keys a job counts under, each with the part of its cost that goes there."""
    if by == "queue":
        return [(usage.queue, 1.0)]
    if by == "user":
        return [(usage.owner or NO_OWNER, 1.0)]
    if by == "job":
        return [(str(usage.job_id), 1.0)]
    if not usage.device_hours:
        return [(CPU_ONLY, 1.0)]
    total = sum(usage.device_hours.values())
    if not total:  # held its devices for no time at all (ended as it was placed): split evenly
        return [(model, 1.0 / len(usage.device_hours)) for model in usage.device_hours]
    return [(model, hours / total) for model, hours in usage.device_hours.items()]


def _union_hours(intervals: list[tuple[datetime, datetime]]) -> float:
    """Hours covered by the union of ``intervals`` (a job holds several rows at once)."""
    seconds, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            seconds += max((end - start).total_seconds(), 0.0)
            reach = end
        elif end > reach:
            seconds += (end - reach).total_seconds()
            reach = end
    return seconds / 3600.0
