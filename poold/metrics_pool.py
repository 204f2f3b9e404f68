"""The store's figures for ``/metrics``: devices, slices, the pool by model, jobs, queues,
nodes and cost.

:class:`PoolCollector` is a ``prometheus_client`` collector. A scrape reads the store only
when its last reading is older than ``metrics.cache_s``; scrapes that come meanwhile (several
Prometheus servers, a dashboard refresh) get that reading again, and one reads at a time.

A device's ``state`` is the first that holds of: ``quarantined`` (out of service for its
health), ``scrubbing`` (its agent cleans it after a job), ``unhealthy`` (reported so),
``allocated`` (something holds a share of it or of one of its MIG slices), ``free``.
``poold_devices`` counts whole devices (GPUs, NPUs, FPGAs; a GPU split into MIG slices
counts once, as itself); ``poold_mig_slices`` counts the slices, by profile.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from poold.db.models import DeviceModel, JobModel, NodeModel, in_service, utcnow
from poold.db.session import reading
from poold.services.accounting import cost_by_queue
from poold.services.nodes import allocated_shares, split_gpus_in_use
from poold.services.overview import ModelOverview, pool_overview
from poold.services.queue_usage import queue_usage

MIB = 2**20
# Job states every queue has a series for, even at zero: what dashboards and alerts watch.
WATCHED_JOB_STATES = ("pending", "assigned", "running")


@dataclass(frozen=True)
class DeviceRow:
    id: int
    parent_id: int | None
    node: str
    kind: str
    model: str
    profile: str | None
    state: str


def device_state(health: str, quarantined_at: datetime | None, scrubbing_since: datetime | None, held: bool) -> str:
    """A device's state for the metrics (see the module docstring)."""
    if quarantined_at is not None:
        return "quarantined"
    if scrubbing_since is not None:
        return "scrubbing"
    if not in_service(health, quarantined_at, scrubbing_since):
        return "unhealthy"
    return "allocated" if held else "free"


def read_devices(session: Session) -> list[DeviceRow]:
    """Every present device with its node's name and its state; a whole GPU split into MIG
    slices is allocated when any of its slices is held."""
    held = allocated_shares(session)
    rows = session.execute(
        select(DeviceModel.id, DeviceModel.parent_id, NodeModel.name, DeviceModel.kind, DeviceModel.model,
               DeviceModel.health, DeviceModel.quarantined_at, DeviceModel.scrubbing_since)
        .join(NodeModel, NodeModel.id == DeviceModel.node_id)
        .where(DeviceModel.present.is_(True))
    ).all()
    # The attributes (a JSON document each, NVLink maps included) of MIG slices only: their profile.
    slice_attributes = dict(session.execute(
        select(DeviceModel.id, DeviceModel.attributes).where(DeviceModel.present.is_(True), DeviceModel.parent_id.is_not(None))
    ).all())
    held_parents = split_gpus_in_use(((row[0], row[1]) for row in rows), held)
    devices = []
    for device_id, parent, node, kind, model, health, quarantined, scrubbing in rows:
        taken = held.get(device_id, 0.0) > 0 or device_id in held_parents
        profile = (slice_attributes.get(device_id) or {}).get("mig_profile") if parent is not None else None
        devices.append(DeviceRow(device_id, parent, node, kind, model, str(profile or "unknown") if parent is not None else None,
                                 device_state(health, quarantined, scrubbing, taken)))
    return devices


def device_families(devices: list[DeviceRow]) -> list[Metric]:
    whole = GaugeMetricFamily("poold_devices", "Whole devices (GPUs, NPUs, FPGAs) by model, kind, node and state; "
                              "MIG slices are in poold_mig_slices.", labels=["model", "kind", "node", "state"])
    slices = GaugeMetricFamily("poold_mig_slices", "MIG slices by model of their GPU, profile, node and state.",
                               labels=["model", "profile", "node", "state"])
    whole_counts = Counter((d.model, d.kind, d.node, d.state) for d in devices if d.parent_id is None)
    slice_counts = Counter((d.model, d.profile or "unknown", d.node, d.state) for d in devices if d.parent_id is not None)
    for labels, count in sorted(whole_counts.items()):
        whole.add_metric(list(labels), count)
    for labels, count in sorted(slice_counts.items()):
        slices.add_metric(list(labels), count)
    return [whole, slices]


def model_families(models: list[ModelOverview]) -> list[Metric]:
    """The pool by model (``poold.services.overview``): what is free and held, prices,
    fragmentation (the leader's measure) and the agents' utilisation as this daemon heard it."""
    def gauge(name: str, text: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=["model", *labels])

    allocated = gauge("poold_allocated_devices", "Whole-device units held (a share counts its fraction, a MIG slice its slices/7).")
    memory = gauge("poold_allocated_memory_bytes", "Device memory held by jobs, bytes.")
    free = gauge("poold_free_devices", "Whole devices in service on ready, undrained nodes with nothing held on them or their slices.")
    slices = gauge("poold_free_mig_slices", "Free MIG slices by profile.", "profile")
    fragmentation = gauge("poold_fragmentation_ratio", "Share of the model's free capacity that the recent job mix cannot use, "
                          "0..1, as the placement engine measures it (only on the leader, once it ran a pass).")
    price = gauge("poold_device_price_per_hour", "Price per hour of one whole device of the model (price units).")
    utilization = gauge("poold_model_utilization_ratio", "Mean utilisation, 0..1, of the model's devices as their agents last "
                        "reported it to this daemon (absent when none reported lately).")
    for model in models:
        allocated.add_metric([model.model], model.allocated)
        memory.add_metric([model.model], model.memory_allocated_mib * MIB)
        free.add_metric([model.model], model.free)
        price.add_metric([model.model], model.price_per_hour)
        for profile, count in sorted(model.mig.items()):
            slices.add_metric([model.model, profile], count.free)
        if model.fragmentation is not None:
            fragmentation.add_metric([model.model], model.fragmentation)
        if model.utilization_pct is not None:
            utilization.add_metric([model.model], model.utilization_pct / 100)
    return [allocated, memory, free, slices, fragmentation, price, utilization]


def job_families(session: Session, now: datetime) -> list[Metric]:
    """Jobs by state and queue; each queue's oldest pending job and cost per hour."""
    jobs = GaugeMetricFamily("poold_jobs", "Jobs by state and queue (pending, assigned and running are always there, "
                             "at 0 when none).", labels=["state", "queue"])
    oldest = GaugeMetricFamily("poold_oldest_pending_age_seconds", "Seconds the queue's oldest pending job has waited "
                               "since its submit (0: none pending).", labels=["queue"])
    cost = GaugeMetricFamily("poold_queue_cost_per_hour", "What the queue's placed jobs cost per hour now (price units).",
                             labels=["queue"])
    accrued = CounterMetricFamily("poold_queue_cost", "Cost the queue's jobs accrued since the store began: price x time "
                                  "held, over every allocation (price units).", labels=["queue"])
    spent = cost_by_queue(session, now)
    counts: dict[tuple[str, str], int] = {}
    for queue_usage_row in queue_usage(session):
        name = queue_usage_row.queue.name
        for state in WATCHED_JOB_STATES:
            counts[(state, name)] = 0
        waited = queue_usage_row.oldest_pending_at
        oldest.add_metric([name], max(0.0, (now - waited).total_seconds()) if waited is not None else 0.0)
        cost.add_metric([name], queue_usage_row.cost_per_hour)
        accrued.add_metric([name], spent.get(name, 0.0))
    for queue, state, count in session.execute(
        select(JobModel.queue_name, JobModel.state, func.count()).group_by(JobModel.queue_name, JobModel.state)
    ):
        counts[(state, queue)] = count
    for labels, count in sorted(counts.items()):
        jobs.add_metric(list(labels), count)
    return [jobs, oldest, cost, accrued]


def node_families(session: Session, now: datetime) -> list[Metric]:
    """Nodes by state (a ready node that is drained counts as ``drained``) and each node's heartbeat age."""
    nodes = GaugeMetricFamily("poold_nodes", "Nodes by state: ready, drained (ready, taking no new jobs), lost.",
                              labels=["state"])
    age = GaugeMetricFamily("poold_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat reached the "
                            "store (marked at most a second late).", labels=["node"])
    states: Counter[str] = Counter({"ready": 0, "drained": 0, "lost": 0})
    for name, state, drained, last in session.execute(
        select(NodeModel.name, NodeModel.state, NodeModel.drained, NodeModel.last_heartbeat_at).order_by(NodeModel.name)
    ):
        states["drained" if state == "ready" and drained else state] += 1
        if last is not None:
            age.add_metric([name], max(0.0, (now - last).total_seconds()))
    for state, count in sorted(states.items()):
        nodes.add_metric([state], count)
    return [nodes, age]


class PoolCollector(Collector):
    """The store's figures (module docstring), read at most every ``metrics.cache_s`` seconds."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.cache_s = ctx.settings.metrics.cache_s
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._read_at = float("-inf")  # monotonic

    def collect(self):
        with self._lock:
            if time.monotonic() - self._read_at >= self.cache_s:
                self._families = self.read()
                self._read_at = time.monotonic()
            families = self._families
        yield from families

    def read(self) -> list[Metric]:
        """Every family, read from the store now."""
        ctx, now = self.ctx, utcnow()
        fragmentation = ctx.scheduler.fragmentation_by_model()
        with reading(ctx.factory) as session:
            models = pool_overview(session, ctx.settings, fragmentation=fragmentation, usage=ctx.reports)
            return [*device_families(read_devices(session)), *model_families(models), *job_families(session, now),
                    *node_families(session, now)]
